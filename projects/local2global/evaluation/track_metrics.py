"""Tracking metrics of YouTube-VIS-format results: HOTA / DetA / AssA (Luiten et al.), IDF1 and ID switches.

The figures are PyPI's ``trackeval`` (the reference implementation of HOTA) on its ``YouTubeVIS`` dataset. They are
read per video and class (trackeval's raw counts) so that any multiset of videos, e.g. a bootstrap resample, is
scored exactly as trackeval would score it, without running it again: :func:`combine` sums the counts and takes the
``HOTA_TP``-weighted mean of AssA as trackeval's ``combine_sequences`` / ``combine_classes_det_averaged`` do (its
``cls_comb_det_av`` figure; class-agnostic figures are the same with every category set to one).

**Tracks.** A YouTube-VIS result file holds a video's top-k (slot, class) pairs, so one tracked slot appears up to
k times with the same masks and different classes. Trackeval would count the copies as extra tracks (false
positives and identity splits), so :func:`extract_tracks` keeps one track per slot: among results of a video with
identical masks, the highest-scoring one (the slot's best class), then those with ``score >= threshold``. The
benchmarks use ``threshold = 0`` (every slot of the top-k): the score scales of trackers differ, and a threshold
would compare calibrations as much as tracking; DetA / HOTA then count low-scoring tracks as false positives for
every row alike, and AssA is the association figure.

``trackeval`` is an optional dependency (``pip install --no-deps trackeval==1.3.0``; ``scripts/install.sh`` installs
it): importing this module works without it, calling :func:`per_video_stats` raises an ImportError that says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["TRACK_METRICS", "extract_tracks", "class_agnostic", "VideoTrackStats", "per_video_stats", "combine",
           "combine_resamples", "tracking_metrics", "stats_to_json", "stats_from_json"]

#: The figures :func:`combine` returns (percent, except the ID switch count).
TRACK_METRICS = ("HOTA", "DetA", "AssA", "IDF1", "IDSW")
#: Percent per fraction.
PERCENT = 100.0


def extract_tracks(preds: Sequence[Mapping], threshold: float = 0.0) -> List[dict]:
    """One track per slot: per video, the best-scoring result among those with identical masks, then score >= t.

    Args:
        preds: YouTube-VIS results (``video_id``, ``category_id``, ``score``, ``segmentations``: one RLE or None
            per frame).
        threshold: the lowest video-level score kept.

    Returns:
        The kept results, in descending score order per video.
    """
    seen: Dict[int, set] = {}
    out = []
    for p in sorted(preds, key=lambda p: (p["video_id"], -p["score"])):
        key = json.dumps(p["segmentations"], sort_keys=True)
        masks = seen.setdefault(p["video_id"], set())
        if key in masks:
            continue  # the same slot under another class
        masks.add(key)
        if p["score"] >= threshold:
            out.append(dict(p))
    return out


def class_agnostic(gt: Mapping, preds: Sequence[Mapping]) -> tuple:
    """The ground truth and results with every category set to one ``object`` class."""
    gt = dict(gt, categories=[{"id": 1, "name": "object", "supercategory": "object"}],
              annotations=[dict(a, category_id=1) for a in gt["annotations"]])
    return gt, [dict(p, category_id=1) for p in preds]


@dataclass
class VideoTrackStats:
    """Trackeval's raw counts of one video, summed over its classes.

    Attributes:
        hota_tp, hota_fn, hota_fp: ``(19,)`` HOTA's true/false counts at each localisation threshold alpha.
        assa_tp: ``(19,)`` AssA x HOTA_TP (the numerator of the HOTA_TP-weighted mean of AssA).
        idtp, idfn, idfp: IDF1's identity counts.
        idsw: CLEAR's ID switches.
    """

    hota_tp: np.ndarray
    hota_fn: np.ndarray
    hota_fp: np.ndarray
    assa_tp: np.ndarray
    idtp: float
    idfn: float
    idfp: float
    idsw: float


def stats_to_json(stats: Mapping[int, VideoTrackStats]) -> dict:
    """A JSON-able form of :func:`per_video_stats`'s output (for caching next to a results file)."""
    return {str(v): {k: (x.tolist() if isinstance(x, np.ndarray) else x) for k, x in vars(s).items()}
            for v, s in stats.items()}


def stats_from_json(data: Mapping) -> Dict[int, VideoTrackStats]:
    """The inverse of :func:`stats_to_json`."""
    arrays = ("hota_tp", "hota_fn", "hota_fp", "assa_tp")
    return {int(v): VideoTrackStats(**{k: (np.asarray(x, dtype=np.float64) if k in arrays else float(x))
                                       for k, x in d.items()}) for v, d in data.items()}


def _require_trackeval():
    try:
        import trackeval  # noqa: F401
    except ImportError as e:
        raise ImportError("tracking metrics need trackeval: pip install --no-deps trackeval==1.3.0 "
                          "(scripts/install.sh installs it)") from e
    return trackeval


def _run_trackeval(gt: Mapping, preds: Sequence[Mapping], work: Path) -> tuple:
    """Trackeval's HOTA, Identity and CLEAR on YouTube-VIS data: ``({sequence: {class: {metric: res}}}, {sequence:
    video id})``; the ``"COMBINED_SEQ"`` entry holds trackeval's own combined figures."""
    _require_trackeval()
    from trackeval import Evaluator, metrics
    from trackeval.datasets import YouTubeVIS

    if work.exists():
        shutil.rmtree(work)
    gt_dir = work / "gt" / "youtube_vis_valid"
    tr_dir = work / "trackers" / "youtube_vis_valid" / "model" / "data"
    gt_dir.mkdir(parents=True)
    tr_dir.mkdir(parents=True)
    (gt_dir / "valid.json").write_text(json.dumps(gt))
    (tr_dir / "results.json").write_text(json.dumps(list(preds)))
    quiet = {"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
             "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False,
             "OUTPUT_EMPTY_CLASSES": False, "DISPLAY_LESS_PROGRESS": True}
    ds_cfg = {"GT_FOLDER": str(work / "gt") + "/", "TRACKERS_FOLDER": str(work / "trackers") + "/",
              "SPLIT_TO_EVAL": "valid", "PRINT_CONFIG": False, "OUTPUT_FOLDER": str(work / "out")}
    with contextlib.redirect_stdout(io.StringIO()):  # trackeval prints its configs whatever PRINT_CONFIG says
        dataset = YouTubeVIS(ds_cfg)
        res, msg = Evaluator(quiet).evaluate([dataset], [metrics.HOTA(), metrics.Identity(), metrics.CLEAR()])
    per_seq = res["YouTubeVIS"]["model"]
    if per_seq is None:
        raise RuntimeError(f"trackeval failed: {msg}")
    return per_seq, {k: int(v) for k, v in dataset.seq_name_to_seq_id.items()}


def per_video_stats(gt: Mapping, preds: Sequence[Mapping], work: Optional[Path] = None
                    ) -> Dict[int, VideoTrackStats]:
    """Run trackeval once (HOTA, Identity, CLEAR) and return each video's counts summed over classes.

    Args:
        gt: YouTube-VIS ground truth (``videos`` with ``file_names``, ``annotations``, ``categories``).
        preds: the tracks (e.g. :func:`extract_tracks`'s output).
        work: scratch folder (trackeval reads files); a temporary one by default, removed afterwards.

    Returns:
        ``{video_id: VideoTrackStats}`` for every video of ``gt``.
    """
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="l2g_trackeval_")) if own else Path(work)
    try:
        per_seq, seq_ids = _run_trackeval(gt, preds, work)
        out: Dict[int, VideoTrackStats] = {}
        for seq, by_cls in per_seq.items():
            if seq == "COMBINED_SEQ":
                continue
            classes = [c for c in by_cls if c not in ("cls_comb_cls_av", "cls_comb_det_av")]
            h = [by_cls[c]["HOTA"] for c in classes]
            out[seq_ids[seq]] = VideoTrackStats(
                hota_tp=np.sum([r["HOTA_TP"] for r in h], axis=0),
                hota_fn=np.sum([r["HOTA_FN"] for r in h], axis=0),
                hota_fp=np.sum([r["HOTA_FP"] for r in h], axis=0),
                assa_tp=np.sum([r["AssA"] * r["HOTA_TP"] for r in h], axis=0),
                idtp=float(sum(by_cls[c]["Identity"]["IDTP"] for c in classes)),
                idfn=float(sum(by_cls[c]["Identity"]["IDFN"] for c in classes)),
                idfp=float(sum(by_cls[c]["Identity"]["IDFP"] for c in classes)),
                idsw=float(sum(by_cls[c]["CLEAR"]["IDSW"] for c in classes)),
            )
        return out
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def combine(stats: Mapping[int, VideoTrackStats], videos: Optional[Iterable[int]] = None) -> Dict[str, float]:
    """HOTA / DetA / AssA / IDF1 (percent) and ID switches of a multiset of videos, as trackeval combines them.

    Args:
        stats: :func:`per_video_stats`'s output.
        videos: video ids, repeats allowed (a bootstrap resample); every video of ``stats`` by default.
    """
    picked = [stats[v] for v in (stats.keys() if videos is None else videos)]
    tp = np.sum([s.hota_tp for s in picked], axis=0)
    fn = np.sum([s.hota_fn for s in picked], axis=0)
    fp = np.sum([s.hota_fp for s in picked], axis=0)
    assa = np.sum([s.assa_tp for s in picked], axis=0) / np.maximum(1.0, tp)
    deta = tp / np.maximum(1.0, tp + fn + fp)
    idtp, idfn, idfp = (sum(getattr(s, k) for s in picked) for k in ("idtp", "idfn", "idfp"))
    return {
        "HOTA": PERCENT * float(np.sqrt(deta * assa).mean()),
        "DetA": PERCENT * float(deta.mean()),
        "AssA": PERCENT * float(assa.mean()),
        "IDF1": PERCENT * float(idtp / max(1.0, idtp + 0.5 * idfp + 0.5 * idfn)),
        "IDSW": float(sum(s.idsw for s in picked)),
    }


def combine_resamples(stats: Mapping[int, VideoTrackStats], picks: Sequence[Sequence[int]],
                      keys: Sequence[str] = ("HOTA", "AssA")) -> Dict[str, np.ndarray]:
    """:func:`combine` on each row of ``picks`` (video ids, repeats allowed), vectorised: ``{key: (R,)}``.

    Used by the benchmarks' bootstrap (a thousand resamples of a few hundred videos in well under a second).
    """
    ids = sorted(stats)
    col = {v: i for i, v in enumerate(ids)}
    idx = np.array([[col[v] for v in row] for row in picks], dtype=np.int64)  # (R, n)
    counts = np.zeros((len(idx), len(ids)))
    np.add.at(counts, (np.repeat(np.arange(len(idx)), idx.shape[1]), idx.reshape(-1)), 1.0)  # (R, V) multiplicity

    def total(field):  # (R, ...) sums over the resampled videos
        x = np.stack([np.asarray(getattr(stats[v], field), dtype=np.float64) for v in ids])
        return counts @ x.reshape(len(ids), -1)

    tp, fn, fp, assa_tp = (total(f) for f in ("hota_tp", "hota_fn", "hota_fp", "assa_tp"))
    assa = assa_tp / np.maximum(1.0, tp)
    deta = tp / np.maximum(1.0, tp + fn + fp)
    idtp, idfn, idfp, idsw = (total(f)[:, 0] for f in ("idtp", "idfn", "idfp", "idsw"))
    out = {"HOTA": PERCENT * np.sqrt(deta * assa).mean(axis=1), "DetA": PERCENT * deta.mean(axis=1),
           "AssA": PERCENT * assa.mean(axis=1),
           "IDF1": PERCENT * idtp / np.maximum(1.0, idtp + 0.5 * idfp + 0.5 * idfn), "IDSW": idsw}
    return {k: out[k] for k in keys}


def tracking_metrics(gt: Mapping, preds: Sequence[Mapping], threshold: float = 0.0, agnostic: bool = False,
                     work: Optional[Path] = None) -> Dict[str, float]:
    """The figures of :func:`combine` on every video, from raw results (tracks extracted, optionally one class)."""
    tracks = extract_tracks(preds, threshold)
    if agnostic:
        gt, tracks = class_agnostic(gt, tracks)
    return combine(per_video_stats(gt, tracks, work))

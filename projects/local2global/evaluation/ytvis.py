"""YouTube-VIS / OVIS video instance segmentation AP: fast evaluation, the detectron2 evaluator and a CLI.

The metric is the official one of the ``youtubevos/cocoapi`` fork (``PythonAPI/pycocotools/ytvoseval.py``),
restated here (SPEC §6):

* IoU of a predicted track ``d`` and a ground-truth track ``g`` = Σ_t |d_t ∩ g_t| / Σ_t |d_t ∪ g_t|; a frame
  where only one side has a mask adds that mask's area to the union, null frames are empty, and an empty
  union gives IoU 0;
* evaluation per (video, category), at most ``max_dets`` (100) predictions per pair, kept by a *stable* sort
  on descending score (ties keep file order);
* a track's area for the small / medium / large ranges is the mean of the truthy entries of the ground truth's
  ``areas`` field (null and 0 dropped, 0 if none); a prediction's is the same rule on its own RLE areas;
* crowd ground truth only gets the ignore flag (COCO greedy matching, where a crowd track may absorb several
  predictions); its IoU is the ordinary one;
* area ranges all / small [0, 128²] / medium [128², 256²] / large [256², 1e10] (bounds inclusive, as official);
  maxDets 1, 10, 100; COCO's 101-point interpolated precision and the 12 summary numbers.

How it is fast (vs. the official per-pair, per-frame ``merge`` + ``area`` loop, restated in
:mod:`local2global.evaluation.ytvis_reference`): for every video, category and frame, ONE
``pycocotools.mask.iou`` call computes the exact IoU of every same-category (prediction, gt) pair present on
that frame directly on the RLEs (in C, skipping pairs whose boxes do not overlap, which the official
``merge`` loop cannot); the integer intersection is recovered exactly from it as
``round(iou * (|d|+|g|) / (1 + iou))`` (an integer below 2^31 recovered from a double: exact), summed over
frames, and the video-level union is ``Σ|d| + Σ|g| - Σ|d∩g|``. The greedy matching skips predictions whose
best IoU is below the threshold (they cannot match, so the result is unchanged). The per-(video, category)
``evalImgs`` are then handed to pycocotools' own ``COCOeval.accumulate`` and ``COCOeval.summarize``.

Returned numbers: :func:`evaluate_ytvis` returns raw fractions in [0, 1] (``-1`` where undefined, e.g. no
ground truth in an area range), as pycocotools does; :class:`YTVISEvaluator` and the CLI report percent
(detectron2 convention, ``nan`` where undefined).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import itertools
import logging
import os
from collections import OrderedDict, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from .results_io import (
    RESULTS_JSON_NAME,
    GroundTruth,
    JsonSource,
    Track,
    YTVISFormatError,
    atomic_write_json,
    load_ground_truth,
    load_json,
    load_predictions,
    write_results_zip,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AREA_RANGES",
    "AREA_LABELS",
    "MAX_DETS",
    "STAT_NAMES",
    "REPORTED_STATS",
    "video_track_ious",
    "gc_paused",
    "evaluate_ytvis",
    "format_results_table",
    "YTVISEvaluator",
    "main",
]

#: Official ``ytvoseval`` area ranges (pixels; bounds inclusive on both sides).
AREA_RANGES: List[List[float]] = [[0**2, 1e5**2], [0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]]
AREA_LABELS: List[str] = ["all", "small", "medium", "large"]
#: Official maxDets; the last one is the per-(video, category) cap (configurable).
MAX_DETS: List[int] = [1, 10, 100]
#: Names of pycocotools' 12 summary numbers, in its order.
STAT_NAMES: List[str] = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
#: The numbers reported in tables and by the detectron2 evaluator.
REPORTED_STATS: List[str] = STAT_NAMES[:8]
#: Extra keys when long-video ids are given (YouTube-VIS 2022).
LONG_SHORT_KEYS: List[str] = ["AP_long", "AP_short", "AP_mean"]
#: pycocotools' cap on a matchable IoU threshold (a threshold of 1.0 still lets IoU 1 match).
_MAX_IOU_THR = 1 - 1e-10


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector (restored on exit).

    Parsing a results file creates millions of small dicts / lists / strings, none of them in reference
    cycles; with the collector running, its generational passes re-traverse them over and over (measured: JSON
    loading 2-3x slower). Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------------------------------------
# IoU between whole-video tracks
# ----------------------------------------------------------------------------------------------------------
def video_track_ious(dts: Sequence[Track], gts: Sequence[Track]) -> np.ndarray:
    """Video-level IoU of every (prediction, gt) pair of one video.

    Args:
        dts: D tracks of one video (any categories), each with ``rles`` (length T) and ``frame_areas`` (T,).
        gts: G tracks of the same video.

    Returns:
        ``(D, G)`` float64 ``Σ_t |d∩g| / Σ_t |d∪g|`` (0 where the union is empty), equal to the official
        per-pair loop: the intersections and unions are the same integers, so the quotient is bit-identical.
    """
    num_d, num_g = len(dts), len(gts)
    if num_d == 0 or num_g == 0:
        return np.zeros((num_d, num_g), dtype=np.float64)
    d_areas = np.stack([d.frame_areas for d in dts])  # (D, T)
    g_areas = np.stack([g.frame_areas for g in gts])  # (G, T)
    inter = np.zeros((num_d, num_g), dtype=np.int64)
    # an empty mask cannot intersect anything: only frames where both sides have a non-empty mask are visited
    d_present = d_areas > 0
    g_present = g_areas > 0
    both = np.flatnonzero(d_present.any(0) & g_present.any(0)).tolist()
    if both:
        no_crowd = np.zeros(num_g, dtype=np.uint8)
        d_all = d_present.all(0)
        g_all = g_present.all(0)
        for t in both:
            # (|di|, |gi|) exact i/u per pair (0 without bounding-box overlap), one C call per frame
            if d_all[t] and g_all[t]:  # common case: every track has a mask on this frame
                frame_iou = mask_utils.iou([d.rles[t] for d in dts], [g.rles[t] for g in gts], no_crowd)
                area_sum = d_areas[:, t, None] + g_areas[None, :, t]
                # iou = i / (a + b - i)  =>  i = iou * (a + b) / (1 + iou); i is an integer < 2^31: exact.
                inter += np.rint(frame_iou * area_sum / (1.0 + frame_iou)).astype(np.int64)
                continue
            di = np.flatnonzero(d_present[:, t])
            gi = np.flatnonzero(g_present[:, t])
            frame_iou = mask_utils.iou(
                [dts[i].rles[t] for i in di.tolist()], [gts[j].rles[t] for j in gi.tolist()], no_crowd[: gi.size]
            )
            area_sum = d_areas[di, t][:, None] + g_areas[gi, t][None, :]
            inter[np.ix_(di, gi)] += np.rint(frame_iou * area_sum / (1.0 + frame_iou)).astype(np.int64)
    union = d_areas.sum(1)[:, None] + g_areas.sum(1)[None, :] - inter
    ious = np.zeros((num_d, num_g), dtype=np.float64)
    np.divide(inter.astype(np.float64), union.astype(np.float64), out=ious, where=union > 0)
    return ious


# ----------------------------------------------------------------------------------------------------------
# Per-(video, category) greedy matching (the official evaluateVid, with a fast path)
# ----------------------------------------------------------------------------------------------------------
class _PairData:
    """Arrays of one (video, category) that every area range reuses.

    Attributes:
        ious: ``(D, G)`` IoUs of the predictions (score-sorted, stable, cut to maxDet) and gts (file order).
        g_area, g_crowd, g_ids: ``(G,)`` gt avg areas, crowd flags, ids.
        d_area, d_ids, d_scores: ``(D,)`` / lists for the predictions.
    """

    __slots__ = ("video_id", "category_id", "ious", "g_area", "g_crowd", "g_ids", "d_area", "d_ids", "d_scores")

    def __init__(self, video_id: int, category_id: int, ious: np.ndarray, gts: Sequence[Track], dts: Sequence[Track]):
        self.video_id = video_id
        self.category_id = category_id
        self.ious = ious
        self.g_area = np.array([g.avg_area for g in gts], dtype=np.float64)
        self.g_crowd = np.array([g.iscrowd for g in gts], dtype=np.int64)
        self.g_ids = np.array([g.id for g in gts], dtype=np.int64)
        self.d_area = np.array([d.avg_area for d in dts], dtype=np.float64)
        self.d_ids = [d.id for d in dts]
        self.d_scores = [d.score for d in dts]


def _evaluate_pair(pair: _PairData, area_rng: Sequence[float], max_det: int, iou_thrs: np.ndarray) -> Optional[dict]:
    """One ``evalImgs`` entry, identical to the official ``evaluateVid`` / pycocotools ``evaluateImg``.

    Args:
        pair: the (video, category) arrays; predictions already score-sorted (stable) and cut to ``max_det``.
        area_rng: ``[lo, hi]`` pixel area range (inclusive bounds).

    A prediction whose best IoU over all gts is below a threshold cannot match at that threshold, so the
    Python loop only visits the others (the outcome is unchanged; random or poor predictions are skipped).
    """
    num_g, num_d = pair.g_area.size, pair.d_area.size
    if num_g == 0 and num_d == 0:
        return None
    lo, hi = area_rng
    num_t = len(iou_thrs)
    if num_g == 0:  # predictions only (the common case): nothing matches, out-of-range ones are ignored
        d_out = (pair.d_area < lo) | (pair.d_area > hi)
        return _entry(pair, area_rng, max_det, np.zeros((num_t, num_d)), np.zeros((num_t, 0)),
                      np.zeros(0, dtype=np.int64), np.repeat(d_out[None, :], num_t, 0), [])
    g_ignore = ((pair.g_crowd != 0) | (pair.g_area < lo) | (pair.g_area > hi)).astype(np.int64)
    gtind = np.argsort(g_ignore, kind="mergesort")  # not-ignored first, stable
    g_ignore = g_ignore[gtind]
    gt_ids = pair.g_ids[gtind]
    gtm = np.zeros((num_t, num_g))
    dtm = np.zeros((num_t, num_d))
    dt_ig = np.zeros((num_t, num_d))
    if num_g and num_d:
        ious_sorted = pair.ious[:, gtind]
        best = ious_sorted.max(axis=1)
        crowd = pair.g_crowd[gtind].tolist()
        ig = g_ignore.tolist()
        ids = gt_ids.tolist()
        rows = None
        for tind, t in enumerate(iou_thrs):
            thr = min(float(t), _MAX_IOU_THR)
            candidates = np.flatnonzero(best >= thr)
            if candidates.size == 0:
                break  # thresholds increase: no later threshold has a candidate either
            if rows is None:
                rows = ious_sorted.tolist()
            matched = gtm[tind]
            for dind in candidates.tolist():
                row = rows[dind]
                iou = thr
                m = -1
                for gind in range(num_g):
                    if matched[gind] > 0 and not crowd[gind]:
                        continue
                    if m > -1 and ig[m] == 0 and ig[gind] == 1:
                        break
                    if row[gind] < iou:
                        continue
                    iou = row[gind]
                    m = gind
                if m == -1:
                    continue
                dt_ig[tind, dind] = ig[m]
                dtm[tind, dind] = ids[m]
                matched[m] = pair.d_ids[dind]
    d_out = ((pair.d_area < lo) | (pair.d_area > hi)).reshape(1, num_d)
    dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, d_out))  # broadcasting == the official np.repeat
    return _entry(pair, area_rng, max_det, dtm, gtm, g_ignore, dt_ig, gt_ids.tolist())


def _entry(pair, area_rng, max_det, dtm, gtm, g_ignore, dt_ig, gt_ids) -> dict:
    """An ``evalImgs`` entry with pycocotools' keys (``image_id`` holds the video id)."""
    return {
        "image_id": pair.video_id,
        "category_id": pair.category_id,
        "aRng": area_rng,
        "maxDet": max_det,
        "dtIds": pair.d_ids,
        "gtIds": gt_ids,
        "dtMatches": dtm,
        "gtMatches": gtm,
        "dtScores": pair.d_scores,
        "gtIgnore": g_ignore,
        "dtIgnore": dt_ig,
    }


class _PrecomputedCOCOeval(COCOeval):
    """pycocotools' ``COCOeval`` whose ``evalImgs`` are supplied, so ``accumulate`` / ``summarize`` are its own.

    ``imgIds`` are video ids. ``summarize`` hard-codes ``maxDets=100`` for the first number (AP); when the cap is
    not 100 that one number is recomputed the same way on the last maxDets (``_fix_ap_for_max_dets``).
    """

    def __init__(self, video_ids: List[int], category_ids: List[int], max_dets: List[int], eval_imgs: List[Optional[dict]]):
        super().__init__(None, None, iouType="segm")
        self.params.imgIds = list(video_ids)
        self.params.catIds = list(category_ids)
        self.params.areaRng = [list(a) for a in AREA_RANGES]
        self.params.areaRngLbl = list(AREA_LABELS)
        self.params.maxDets = list(max_dets)
        self.evalImgs = eval_imgs
        self._paramsEval = copy.deepcopy(self.params)

    def run(self) -> np.ndarray:
        """accumulate + summarize (their prints go to the debug log); returns the 12 stats."""
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            self.accumulate()
            self.summarize()
        logger.debug("pycocotools output:\n%s", buf.getvalue())
        stats = np.array(self.stats, dtype=np.float64)
        if self.params.maxDets[-1] != 100:
            precision = self.eval["precision"][:, :, :, 0, -1]
            valid = precision[precision > -1]
            stats[0] = float(np.mean(valid)) if valid.size else -1.0
        return stats


# ----------------------------------------------------------------------------------------------------------
# Public evaluation function
# ----------------------------------------------------------------------------------------------------------
def _read_id_list(ids: Optional[Iterable]) -> Optional[List[int]]:
    if ids is None:
        return None
    if isinstance(ids, (str, os.PathLike)):
        with open(ids) as f:
            return [int(tok) for tok in f.read().replace(",", " ").split()]
    return [int(i) for i in ids]


def evaluate_ytvis(
    gt: JsonSource,
    results: JsonSource,
    long_video_ids: Optional[Iterable[int]] = None,
    max_dets: int = MAX_DETS[-1],
) -> "OrderedDict[str, float]":
    """Score a YouTube-VIS / OVIS results file with the official ``ytvoseval`` metric.

    Args:
        gt: ground-truth JSON (path or parsed dict) with annotations.
        results: results JSON (path or parsed list of ``{video_id, category_id, score, segmentations}``).
        long_video_ids: optional ids (or a path to a whitespace/comma separated file) of the "long" videos of
            YouTube-VIS 2022: the long and the short videos are then also scored separately.
        max_dets: the per-(video, category) cap on predictions (the last maxDets; >= 10).

    Returns:
        OrderedDict of the 12 pycocotools numbers (:data:`STAT_NAMES`) as raw fractions in [0, 1], -1 where
        undefined; with ``long_video_ids`` also ``AP_long``, ``AP_short`` and their mean ``AP_mean``.

    Raises:
        ValueError (:class:`YTVISFormatError`): malformed files (naming the file and the video id), a gt
            without annotations, or ``max_dets < 10``.
    """
    if not (isinstance(max_dets, int) and max_dets >= MAX_DETS[1]):
        raise ValueError(f"max_dets must be an integer >= {MAX_DETS[1]}, got {max_dets!r}")
    with gc_paused():
        return _evaluate_ytvis(gt, results, long_video_ids, max_dets)


def _evaluate_ytvis(gt, results, long_video_ids, max_dets) -> "OrderedDict[str, float]":
    gt_data = load_ground_truth(gt)
    if not gt_data.has_annotations:
        raise YTVISFormatError(
            f"ground truth {gt_data.name!r} has no annotations (a hidden validation/test split?): it cannot be "
            "scored; submit the results to the benchmark server instead"
        )
    preds = load_predictions(results, gt_data)
    eval_imgs, video_ids = _evaluate_all(gt_data, preds, max_dets)
    dets = [MAX_DETS[0], MAX_DETS[1], max_dets]
    stats = _accumulate(eval_imgs, video_ids, gt_data.category_ids, dets)
    out = OrderedDict((k, float(v)) for k, v in zip(STAT_NAMES, stats))
    long_ids = _read_id_list(long_video_ids)
    if long_ids is not None:
        long_set = set(long_ids)
        unknown = sorted(long_set - set(video_ids))
        if unknown:
            raise YTVISFormatError(f"long_video_ids {unknown[:5]} are not videos of the ground truth {gt_data.name!r}")
        subsets = {
            "AP_long": [v for v in video_ids if v in long_set],
            "AP_short": [v for v in video_ids if v not in long_set],
        }
        for key, subset in subsets.items():
            out[key] = float(_accumulate(eval_imgs, subset, gt_data.category_ids, dets)[0]) if subset else -1.0
        valid = [out[k] for k in subsets if out[k] >= 0]
        out["AP_mean"] = float(np.mean(valid)) if len(valid) == len(subsets) else -1.0
    return out


def _evaluate_all(
    gt: GroundTruth, preds: List[Track], max_dets: int
) -> Tuple[Dict[Tuple[int, int, int], Optional[dict]], List[int]]:
    """Per (category, area index, video) ``evalImgs`` entries for all videos of the ground truth."""
    video_ids = sorted(gt.videos)
    iou_thrs = COCOeval(iouType="segm").params.iouThrs
    gts_by_video: Dict[int, List[Track]] = defaultdict(list)
    for g in gt.tracks:
        gts_by_video[g.video_id].append(g)
    dts_by_pair: Dict[Tuple[int, int], List[Track]] = defaultdict(list)
    for d in preds:
        dts_by_pair[d.video_id, d.category_id].append(d)
    dts_by_video: Dict[int, List[Track]] = defaultdict(list)
    for (vid, _), dts in dts_by_pair.items():
        order = np.argsort([-d.score for d in dts], kind="mergesort")  # stable: ties keep file order
        dts_by_video[vid].extend(dts[i] for i in order[:max_dets])

    eval_imgs: Dict[Tuple[int, int, int], Optional[dict]] = {}
    for vid in video_ids:
        v_gts, v_dts = gts_by_video.get(vid, []), dts_by_video.get(vid, [])
        if not v_gts and not v_dts:
            continue
        g_cat = np.array([g.category_id for g in v_gts], dtype=np.int64)
        d_cat = np.array([d.category_id for d in v_dts], dtype=np.int64)
        for cat in np.union1d(g_cat, d_cat).tolist():
            gi, di = np.flatnonzero(g_cat == cat), np.flatnonzero(d_cat == cat)
            pair_gts, pair_dts = [v_gts[i] for i in gi], [v_dts[i] for i in di]
            # Only same-category pairs are compared (one batched call per frame and category; a category that
            # one side lacks costs nothing).
            pair = _PairData(vid, cat, video_track_ious(pair_dts, pair_gts), pair_gts, pair_dts)
            for a, rng in enumerate(AREA_RANGES):
                eval_imgs[cat, a, vid] = _evaluate_pair(pair, rng, max_dets, iou_thrs)
    return eval_imgs, video_ids


def _accumulate(
    eval_imgs: Dict[Tuple[int, int, int], Optional[dict]],
    video_ids: List[int],
    category_ids: List[int],
    max_dets: List[int],
) -> np.ndarray:
    """Run pycocotools' accumulate/summarize on the entries of ``video_ids``; returns the 12 stats."""
    ordered = [
        eval_imgs.get((cat, a, vid))
        for cat in category_ids
        for a in range(len(AREA_RANGES))
        for vid in video_ids
    ]
    return _PrecomputedCOCOeval(video_ids, category_ids, max_dets, ordered).run()


def format_results_table(results: Dict[str, float], percent_input: bool = False) -> str:
    """A one-row tabulate table of the reported numbers (percent, 2 decimals; ``nan`` where undefined).

    Args:
        results: output of :func:`evaluate_ytvis` (raw fractions) or of :class:`YTVISEvaluator`
            (``percent_input=True``).
    """
    from tabulate import tabulate

    keys = [k for k in REPORTED_STATS + LONG_SHORT_KEYS if k in results]
    row = []
    for k in keys:
        v = results[k]
        if not percent_input:
            v = v * 100 if v >= 0 else float("nan")
        row.append(v)
    return tabulate([row], headers=keys, tablefmt="pipe", floatfmt=".2f", numalign="left")


def _to_percent(results: Dict[str, float], keys: Sequence[str]) -> "OrderedDict[str, float]":
    return OrderedDict((k, results[k] * 100 if results[k] >= 0 else float("nan")) for k in keys if k in results)


# ----------------------------------------------------------------------------------------------------------
# detectron2 evaluator
# ----------------------------------------------------------------------------------------------------------
try:
    from detectron2.evaluation import DatasetEvaluator as _DatasetEvaluatorBase
except ImportError:  # pragma: no cover - detectron2 is a dependency; keep the CLI importable without it
    _DatasetEvaluatorBase = object


class YTVISEvaluator(_DatasetEvaluatorBase):
    """detectron2 ``DatasetEvaluator`` for YouTube-VIS / OVIS video instance segmentation.

    ``process`` receives the model's eval outputs (SPEC §5, one dict per video:
    ``{"video_id", "image_size", "scores": [float]*k, "labels": [int]*k (contiguous),
    "segmentations": [[RLE dict with str counts, or None]*length]*k}``) and turns them into official results
    entries (contiguous labels mapped back to dataset category ids through the metadata's
    ``thing_dataset_id_to_contiguous_id``). ``evaluate`` gathers them from all processes, writes
    ``results.json`` atomically to ``output_dir`` and, on the main process:

    * if the dataset's gt JSON (``MetadataCatalog.get(dataset_name).json_file``) has annotations, scores it
      and returns ``OrderedDict(segm={AP, AP50, AP75, APs, APm, APl, AR1, AR10[, AP_long, AP_short, AP_mean]})``
      in percent;
    * otherwise (hidden validation/test sets) writes the server-ready ``results.zip`` and returns ``{}``.

    Args:
        dataset_name: a registered dataset with ``json_file`` metadata.
        output_dir: where ``results.json`` / ``results.zip`` go (nothing is written if None).
        distributed: gather predictions from every process (main process evaluates).
        max_dets: per-(video, category) cap on predictions.
        long_video_ids: YouTube-VIS 2022 long-video ids (list, or a path to an id file); defaults to the
            metadata's ``long_video_ids`` if it has one.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        max_dets: int = MAX_DETS[-1],
        long_video_ids: Optional[Iterable[int]] = None,
    ):
        from detectron2.data import MetadataCatalog

        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._max_dets = max_dets
        meta = MetadataCatalog.get(dataset_name)
        self._json_file = meta.get("json_file", None)
        if self._json_file is None:
            raise ValueError(f"dataset {dataset_name!r} has no 'json_file' metadata: the evaluator needs the gt JSON")
        if long_video_ids is None:
            long_video_ids = meta.get("long_video_ids", None)
        self._long_video_ids = _read_id_list(long_video_ids)
        id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
        if id_map is None:
            # detectron2's convention when the metadata lacks the map: sorted dataset ids -> 0..K-1.
            gt_json, _ = load_json(self._json_file, "ground truth")
            cat_ids = sorted(int(c["id"]) for c in gt_json.get("categories", []))
            id_map = {c: i for i, c in enumerate(cat_ids)}
            logger.warning("dataset %r has no thing_dataset_id_to_contiguous_id; using sorted gt category ids", dataset_name)
        self._contiguous_to_dataset = {int(v): int(k) for k, v in id_map.items()}
        self._predictions: List[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Convert each video's output dict to results entries.

        Raises:
            ValueError: an output with missing keys, inconsistent list lengths or an unknown label.
        """
        for inp, out in zip(inputs, outputs):
            vid = out.get("video_id", inp.get("video_id") if isinstance(inp, dict) else None)
            where = f"dataset {self._dataset_name!r}, video_id {vid}"
            if vid is None:
                raise ValueError(f"{where}: neither the model output nor the input has a 'video_id'")
            for key in ("scores", "labels", "segmentations"):
                if key not in out:
                    raise ValueError(f"{where}: model output misses key '{key}'")
            scores, labels, segs = list(out["scores"]), list(out["labels"]), list(out["segmentations"])
            if not (len(scores) == len(labels) == len(segs)):
                raise ValueError(
                    f"{where}: model output has {len(scores)} scores, {len(labels)} labels, {len(segs)} tracks"
                )
            for score, label, track in zip(scores, labels, segs):
                label = int(label)
                if label not in self._contiguous_to_dataset:
                    raise ValueError(f"{where}: contiguous label {label} is not a category of the dataset")
                self._predictions.append(
                    {
                        "video_id": int(vid),
                        "category_id": self._contiguous_to_dataset[label],
                        "score": float(score),
                        "segmentations": [_jsonable_rle(r) for r in track],
                    }
                )

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        from detectron2.utils import comm

        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions, dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            predictions = list(itertools.chain.from_iterable(gathered))
        else:
            predictions = self._predictions
        if not predictions:
            logger.warning("[YTVISEvaluator] %s: no predictions were produced", self._dataset_name)

        if self._output_dir:
            path = os.path.join(self._output_dir, RESULTS_JSON_NAME)
            atomic_write_json(predictions, path)
            logger.info("[YTVISEvaluator] wrote %d predictions to %s", len(predictions), path)

        gt_json, _ = load_json(self._json_file, "ground truth")
        if not isinstance(gt_json, dict) or not gt_json.get("annotations"):
            if not self._output_dir:
                logger.warning(
                    "[YTVISEvaluator] %s has no annotations and no output_dir is set: nothing to score or submit",
                    self._json_file,
                )
                return OrderedDict()
            zip_path = os.path.join(self._output_dir, "results.zip")
            write_results_zip(predictions, zip_path)
            logger.info(
                "[YTVISEvaluator] %s has no annotations (hidden split): wrote %s for the benchmark server",
                self._json_file,
                zip_path,
            )
            return OrderedDict()

        del gt_json  # evaluate from the path, so that errors name the gt file
        try:
            raw = evaluate_ytvis(
                self._json_file, predictions, long_video_ids=self._long_video_ids, max_dets=self._max_dets
            )
        except YTVISFormatError as e:
            written = os.path.join(self._output_dir, RESULTS_JSON_NAME) if self._output_dir else "not written"
            raise YTVISFormatError(
                f"[YTVISEvaluator] dataset {self._dataset_name!r}: the predictions (results file: {written}) "
                f"cannot be scored: {e}"
            ) from e
        res = _to_percent(raw, REPORTED_STATS + LONG_SHORT_KEYS)
        logger.info("[YTVISEvaluator] %s segm AP:\n%s", self._dataset_name, format_results_table(res, percent_input=True))
        return OrderedDict(segm=res)


def _jsonable_rle(rle: Optional[dict]) -> Optional[dict]:
    """RLE with ``str`` counts (pycocotools' ``encode`` gives bytes), ``None`` kept."""
    if rle is None:
        return None
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> "OrderedDict[str, float]":
    """``python -m local2global.evaluation.ytvis --gt GT.json --results RESULTS.json [--long-video-ids ids.txt]``."""
    parser = argparse.ArgumentParser(description="Score a YouTube-VIS / OVIS results file (official ytvoseval AP).")
    parser.add_argument("--gt", required=True, help="ground-truth JSON with annotations")
    parser.add_argument("--results", required=True, help="results JSON (list of video-level predictions)")
    parser.add_argument("--long-video-ids", default=None, help="file of long-video ids (YouTube-VIS 2022)")
    parser.add_argument("--max-dets", type=int, default=MAX_DETS[-1], help="per-(video, category) cap")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        res = evaluate_ytvis(args.gt, args.results, long_video_ids=args.long_video_ids, max_dets=args.max_dets)
    except (ValueError, OSError) as e:  # malformed or missing files: one clear line, exit status 2
        parser.exit(2, f"error: {e}\n")
    print(format_results_table(res))
    return res


if __name__ == "__main__":  # pragma: no cover
    main()

"""A straightforward re-statement of the official YouTube-VIS evaluation (``youtubevos/cocoapi`` ``ytvoseval``).

This is the test oracle and the benchmark baseline of :mod:`local2global.evaluation.ytvis`; it is written for
clarity, not speed, and deliberately shares no code with it (no input validation either: it expects
well-formed files). Every step follows the official definition:

* ``_prepare``: segmentations converted to RLE frame by frame (polygons merged, uncompressed RLE compressed),
  ``avg_area`` = mean of the truthy ``areas`` entries (gt: the JSON field; predictions: their own RLE areas, as
  ``loadRes`` computes them), crowd ground truth flagged ``ignore``;
* ``computeIoU``: per (video, category), predictions stably sorted by score and cut to ``maxDets[-1]``, then for
  every (prediction, gt) pair a loop over frames with ``merge(intersect)`` / ``merge(union)`` / ``area``;
* ``evaluateVid``: COCO greedy matching per IoU threshold and area range;
* ``accumulate`` / ``summarize``: COCO's 101-point interpolated precision and the 12 summary numbers
  (restated here too, so that the oracle does not rely on pycocotools' ``COCOeval``).

Returned numbers are raw fractions (``-1`` where undefined), keyed like :data:`ytvis.STAT_NAMES`.
"""

from __future__ import annotations

import copy
import json
import os
from collections import OrderedDict, defaultdict
from typing import Any, Iterable, List, Optional

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["evaluate_ytvis_reference", "REF_STAT_NAMES"]

REF_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]

_IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
_REC_THRS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
_AREA_RNG = [[0.0, 1e10], [0.0, 128.0**2], [128.0**2, 256.0**2], [256.0**2, 1e10]]
_AREA_LBL = ["all", "small", "medium", "large"]


def _load(obj: Any) -> Any:
    if isinstance(obj, (str, os.PathLike)):
        with open(obj) as f:
            return json.load(f)
    return copy.deepcopy(obj)


def _to_rle(seg: Any, h: int, w: int) -> dict:
    """The official ``annToRLE`` for one frame (called only for truthy segmentations)."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, h, w)
    return seg


def _avg_area(areas: List[Any]) -> float:
    kept = [a for a in areas if a]
    return float(np.array(kept).mean()) if kept else 0.0


def _iou_seq(d_seq: List[Any], g_seq: List[Any]) -> float:
    """Official per-pair video IoU: a Python loop over frames."""
    inter = 0.0
    union = 0.0
    for d, g in zip(d_seq, g_seq):
        if d and g:
            inter += float(mask_utils.area(mask_utils.merge([d, g], True)))
            union += float(mask_utils.area(mask_utils.merge([d, g], False)))
        elif g:
            union += float(mask_utils.area(g))
        elif d:
            union += float(mask_utils.area(d))
    return inter / union if union > 0.0 else 0.0


def _evaluate_vid(gts, dts, ious, area_rng, max_det):
    """Official ``evaluateVid`` for one (video, category, area range)."""
    if not gts and not dts:
        return None
    lo, hi = area_rng
    for g in gts:
        g["_ignore"] = 1 if (g["ignore"] or g["avg_area"] < lo or g["avg_area"] > hi) else 0
    gtind = np.argsort([g["_ignore"] for g in gts], kind="mergesort")
    gts = [gts[i] for i in gtind]
    dtind = np.argsort([-d["score"] for d in dts], kind="mergesort")
    dts = [dts[i] for i in dtind[0:max_det]]
    iscrowd = [int(g["iscrowd"]) for g in gts]
    if len(ious) > 0:
        ious = ious[:, gtind]
    num_t, num_g, num_d = len(_IOU_THRS), len(gts), len(dts)
    gtm = np.zeros((num_t, num_g))
    dtm = np.zeros((num_t, num_d))
    gt_ig = np.array([g["_ignore"] for g in gts])
    dt_ig = np.zeros((num_t, num_d))
    if len(ious) > 0:
        for tind, t in enumerate(_IOU_THRS):
            for dind, d in enumerate(dts):
                best = min(t, 1 - 1e-10)
                m = -1
                for gind in range(num_g):
                    if gtm[tind, gind] > 0 and not iscrowd[gind]:
                        continue
                    if m > -1 and gt_ig[m] == 0 and gt_ig[gind] == 1:
                        break
                    if ious[dind, gind] < best:
                        continue
                    best = ious[dind, gind]
                    m = gind
                if m == -1:
                    continue
                dt_ig[tind, dind] = gt_ig[m]
                dtm[tind, dind] = gts[m]["id"]
                gtm[tind, m] = d["id"]
    outside = np.array([d["avg_area"] < lo or d["avg_area"] > hi for d in dts]).reshape((1, num_d))
    dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(outside, num_t, 0)))
    return {"dtMatches": dtm, "dtScores": [d["score"] for d in dts], "gtIgnore": gt_ig, "dtIgnore": dt_ig}


def _accumulate(evals, num_cats, num_vids, max_dets):
    """COCO accumulate: precision (T,R,K,A,M) and recall (T,K,A,M), -1 where undefined."""
    num_t, num_r, num_a, num_m = len(_IOU_THRS), len(_REC_THRS), len(_AREA_RNG), len(max_dets)
    precision = -np.ones((num_t, num_r, num_cats, num_a, num_m))
    recall = -np.ones((num_t, num_cats, num_a, num_m))
    for k in range(num_cats):
        for a in range(num_a):
            entries = [evals[k][a][i] for i in range(num_vids)]
            entries = [e for e in entries if e is not None]
            if not entries:
                continue
            for m, max_det in enumerate(max_dets):
                scores = np.concatenate([np.asarray(e["dtScores"][:max_det], dtype=np.float64) for e in entries])
                order = np.argsort(-scores, kind="mergesort")
                dtm = np.concatenate([e["dtMatches"][:, :max_det] for e in entries], axis=1)[:, order]
                dt_ig = np.concatenate([e["dtIgnore"][:, :max_det] for e in entries], axis=1)[:, order]
                gt_ig = np.concatenate([e["gtIgnore"] for e in entries])
                num_pos = int(np.count_nonzero(gt_ig == 0))
                if num_pos == 0:
                    continue
                tps = np.logical_and(dtm != 0, np.logical_not(dt_ig))
                fps = np.logical_and(dtm == 0, np.logical_not(dt_ig))
                tp_cum = np.cumsum(tps, axis=1).astype(np.float64)
                fp_cum = np.cumsum(fps, axis=1).astype(np.float64)
                for t in range(num_t):
                    tp, fp = tp_cum[t], fp_cum[t]
                    nd = len(tp)
                    rc = tp / num_pos
                    pr = list(tp / (fp + tp + np.spacing(1)))
                    recall[t, k, a, m] = rc[-1] if nd else 0.0
                    # precision envelope: make it monotonically non-increasing from the right
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    q = np.zeros(num_r)
                    idx = np.searchsorted(rc, _REC_THRS, side="left")
                    for ri, pi in enumerate(idx):
                        if pi >= nd:
                            break  # recall threshold never reached: precision stays 0 from here on
                        q[ri] = pr[pi]
                    precision[t, :, k, a, m] = q
    return precision, recall


def _summarize(precision, recall, max_dets):
    def one(ap, iou_thr=None, area="all", max_det=100):
        a = _AREA_LBL.index(area)
        if max_det not in max_dets:
            return -1.0
        m = max_dets.index(max_det)
        s = precision if ap else recall
        if iou_thr is not None:
            s = s[np.flatnonzero(np.isclose(_IOU_THRS, iou_thr))]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        valid = s[s > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    last = max_dets[-1]
    return [
        one(1, max_det=last),
        one(1, 0.5, max_det=last),
        one(1, 0.75, max_det=last),
        one(1, area="small", max_det=last),
        one(1, area="medium", max_det=last),
        one(1, area="large", max_det=last),
        one(0, max_det=max_dets[0]),
        one(0, max_det=max_dets[1]),
        one(0, max_det=last),
        one(0, area="small", max_det=last),
        one(0, area="medium", max_det=last),
        one(0, area="large", max_det=last),
    ]


def evaluate_ytvis_reference(
    gt: Any, results: Any, max_dets: int = 100, video_ids: Optional[Iterable[int]] = None
) -> "OrderedDict[str, float]":
    """Official-definition YouTube-VIS AP, computed the slow, obvious way.

    Args:
        gt: ground-truth JSON (path or dict; not modified).
        results: results JSON (path or list; not modified).
        max_dets: per-(video, category) cap; maxDets are ``[1, 10, max_dets]``.
        video_ids: evaluate only these videos (e.g. the long videos of YouTube-VIS 2022); default all.

    Returns:
        OrderedDict of the 12 summary numbers (raw fractions, -1 where undefined).
    """
    gt = _load(gt)
    res = _load(results)
    videos = {v["id"]: v for v in gt["videos"]}
    vid_ids = sorted(videos if video_ids is None else set(video_ids))
    vid_set = set(vid_ids)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    cat_set = set(cat_ids)

    def prepare(ann):
        v = videos[ann["video_id"]]
        ann["segmentations"] = [_to_rle(s, v["height"], v["width"]) if s else None for s in ann["segmentations"]]

    gts_by = defaultdict(list)
    for ann in gt.get("annotations") or []:
        prepare(ann)
        if "areas" not in ann:  # same documented fallback as the fast evaluator: the masks' own areas
            ann["areas"] = [float(mask_utils.area(s)) if s else None for s in ann["segmentations"]]
        ann["avg_area"] = _avg_area(ann["areas"])
        ann["ignore"] = bool(ann.get("iscrowd", 0))
        ann["iscrowd"] = int(bool(ann.get("iscrowd", 0)))
        if ann["video_id"] in vid_set and ann["category_id"] in cat_set:
            gts_by[ann["video_id"], ann["category_id"]].append(ann)
    dts_by = defaultdict(list)
    for i, ann in enumerate(res):
        prepare(ann)
        ann["areas"] = [mask_utils.area(s) if s else None for s in ann["segmentations"]]
        ann["avg_area"] = _avg_area(ann["areas"])
        ann["id"] = i + 1
        ann["iscrowd"] = 0
        if ann["video_id"] in vid_set and ann["category_id"] in cat_set:
            dts_by[ann["video_id"], ann["category_id"]].append(ann)

    max_det_list = [1, 10, max_dets]
    ious = {}
    for vid in vid_ids:
        for cat in cat_ids:
            gts, dts = gts_by[vid, cat], dts_by[vid, cat]
            if not gts and not dts:
                ious[vid, cat] = []
                continue
            order = np.argsort([-d["score"] for d in dts], kind="mergesort")
            dts = [dts[i] for i in order][:max_dets]
            mat = np.zeros((len(dts), len(gts)))
            for i, j in np.ndindex(mat.shape):
                mat[i, j] = _iou_seq(dts[i]["segmentations"], gts[j]["segmentations"])
            ious[vid, cat] = mat

    evals = [
        [[_evaluate_vid(gts_by[vid, cat], dts_by[vid, cat], ious[vid, cat], rng, max_dets) for vid in vid_ids]
         for rng in _AREA_RNG]
        for cat in cat_ids
    ]
    precision, recall = _accumulate(evals, len(cat_ids), len(vid_ids), max_det_list)
    return OrderedDict(zip(REF_STAT_NAMES, _summarize(precision, recall, max_det_list)))


# ----------------------------------------------------------------------------------------------------------
# Random evaluation sets (tests, benchmark) and the speed comparison
# ----------------------------------------------------------------------------------------------------------
#: Segmentation encodings :func:`make_random_ytvis` can write (SPEC §6 lists all of them).
ENCODINGS = ("rle", "uncompressed", "polygon")


def _uncompressed_rle(rle: dict) -> dict:
    """Uncompressed RLE (``counts`` a list of run lengths, column-major, starting with zeros)."""
    mask = mask_utils.decode(rle).ravel(order="F")
    change = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [mask.size]])
    runs = np.diff(bounds).tolist()
    if mask.size and mask[0]:
        runs = [0] + runs
    return {"size": list(rle["size"]), "counts": [int(r) for r in runs]}


def _encode_box(box, h: int, w: int, encoding: str) -> Optional[Any]:
    x, y, bw, bh = box
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(w), x + bw), min(float(h), y + bh)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    if encoding == "polygon":
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]
    rle = mask_utils.frPyObjects(np.array([[x0, y0, x1 - x0, y1 - y0]], dtype=np.float64), h, w)[0]
    if encoding == "uncompressed":
        return _uncompressed_rle(rle)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def make_random_ytvis(
    num_videos: int = 20,
    preds_per_video: int = 20,
    seed: int = 0,
    num_categories: int = 5,
    height: int = 48,
    width: int = 64,
    length_range=(3, 8),
    gt_per_video=(1, 4),
    gt_encodings=ENCODINGS,
    pred_encodings=ENCODINGS,
    null_prob: float = 0.15,
    crowd_prob: float = 0.1,
    empty_rle_prob: float = 0.05,
    copy_prob: float = 0.6,
    keep_category_prob: float = 0.75,
    categories_per_video: Optional[int] = None,
    side_range=(0.03, 0.8),
):
    """A random YouTube-VIS ground truth and results list exercising every rule of the metric.

    Ground-truth tracks are moving boxes (sizes spanning the small / medium / large ranges when the video is
    large enough) with null frames, some crowd tracks and an ``areas`` field; predictions are jittered copies
    of gt tracks (often the right category, sometimes a shifted time span) and random boxes, with scores
    rounded to 2 decimals (ties), some empty-but-present RLEs and null frames. Each frame's encoding is drawn
    from ``gt_encodings`` / ``pred_encodings`` (``"rle"``, ``"uncompressed"``, ``"polygon"``). A prediction copies a
    gt track with probability ``copy_prob`` and keeps its category with probability ``keep_category_prob``.
    ``categories_per_video`` (default: all) draws each video's gt categories from a random subset of that size,
    giving crowded scenes with several objects of one category (OVIS-like). Box sides are log-uniform in
    ``side_range`` (fractions of the frame side).

    Returns:
        ``(gt: dict, results: list)``.
    """
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "name": f"cat{c}"} for c in range(1, num_categories + 1)]
    videos, annotations, results = [], [], []
    next_ann = 1

    def trajectory(length):
        # log-uniform sides: tiny to frame-filling objects, as in real videos
        bw = float(np.exp(rng.uniform(np.log(side_range[0]), np.log(side_range[1]))) * width)
        bh = float(np.exp(rng.uniform(np.log(side_range[0]), np.log(side_range[1]))) * height)
        x, y = float(rng.uniform(-0.1 * width, width - 0.5 * bw)), float(rng.uniform(-0.1 * height, height - 0.5 * bh))
        vx, vy = rng.normal(0, 0.03 * width), rng.normal(0, 0.03 * height)
        return [(x + vx * t, y + vy * t, bw, bh) for t in range(length)]

    for v in range(1, num_videos + 1):
        length = int(rng.integers(length_range[0], length_range[1] + 1))
        videos.append({"id": v, "height": height, "width": width, "length": length,
                       "file_names": [f"v{v}/{t:05d}.jpg" for t in range(length)]})
        gt_tracks = []
        n_cats = num_categories if categories_per_video is None else min(categories_per_video, num_categories)
        video_cats = rng.choice(np.arange(1, num_categories + 1), size=n_cats, replace=False)
        for _ in range(int(rng.integers(gt_per_video[0], gt_per_video[1] + 1))):
            boxes = trajectory(length)
            start, stop = sorted(rng.integers(0, length + 1, size=2).tolist())
            stop = max(stop, start + 1)
            present = [start <= t < stop and rng.random() > null_prob for t in range(length)]
            cat = int(rng.choice(video_cats))
            segs, areas = [], []
            for t in range(length):
                enc = str(rng.choice(gt_encodings))
                seg = _encode_box(boxes[t], height, width, enc) if present[t] else None
                segs.append(seg)
                areas.append(float(mask_utils.area(_to_rle(seg, height, width))) if seg else None)
            annotations.append({"id": next_ann, "video_id": v, "category_id": cat,
                                "iscrowd": int(rng.random() < crowd_prob), "segmentations": segs,
                                "areas": areas, "bboxes": [None] * length})
            next_ann += 1
            gt_tracks.append((boxes, present, cat))
        for _ in range(preds_per_video):
            if gt_tracks and rng.random() < copy_prob:
                boxes, present, cat = gt_tracks[int(rng.integers(len(gt_tracks)))]
                jitter = rng.normal(0, rng.choice([0.01, 0.05, 0.2]) * max(height, width), size=4)
                boxes = [(x + jitter[0], y + jitter[1], bw + jitter[2], bh + jitter[3]) for x, y, bw, bh in boxes]
                shift = int(rng.integers(-1, 2)) if rng.random() < 0.3 else 0
                present = [present[min(max(t - shift, 0), length - 1)] or rng.random() < 0.1 for t in range(length)]
                if rng.random() > keep_category_prob:
                    cat = int(rng.integers(1, num_categories + 1))
            else:
                boxes = trajectory(length)
                present = [rng.random() > null_prob for _ in range(length)]
                cat = int(rng.integers(1, num_categories + 1))
            segs = []
            for t in range(length):
                if not present[t]:
                    segs.append(None)
                elif rng.random() < empty_rle_prob:
                    segs.append({"size": [height, width], "counts": mask_utils.encode(
                        np.zeros((height, width), dtype=np.uint8, order="F"))["counts"].decode("ascii")})
                else:
                    segs.append(_encode_box(boxes[t], height, width, str(rng.choice(pred_encodings))))
            results.append({"video_id": v, "category_id": cat, "score": round(float(rng.random()), 2),
                            "segmentations": segs})
    gt = {"videos": videos, "categories": categories, "annotations": annotations}
    return gt, results


#: Benchmark presets: a YouTube-VIS-like set (1-5 objects of mostly different categories per video) and an
#: OVIS-like crowded set (4-10 objects from 2 categories per video, so several gts share a category).
BENCHMARK_PRESETS = {
    "ytvis": dict(gt_per_video=(1, 5), categories_per_video=None, num_categories=40),
    "crowded": dict(gt_per_video=(4, 10), categories_per_video=2, num_categories=25),
}


#: Environment variable naming a directory with a copy of the official youtubevos/cocoapi ``ytvos.py`` and
#: ``ytvoseval.py`` (as a package, e.g. ``<dir>/ytvosofficial/{__init__,mask,ytvos,ytvoseval}.py``, or the files
#: themselves): the benchmark then also times the official pipeline. The project does not ship that code.
OFFICIAL_ENV = "L2G_YTVOS_OFFICIAL"

# One timed evaluation in a fresh interpreter (so every sample starts from the same memory state): prints JSON
# {"seconds", "stats", "timings"}. Imports are outside the timed region.
_TIMED_RUN = r"""
import contextlib, gc, io, json, os, sys, time
kind, gt_path, res_path, official_dir = sys.argv[1:5]
if kind == "ours":
    from local2global.evaluation.ytvis import STAT_NAMES, evaluate_ytvis
    timings = {}
    tic = time.perf_counter()
    out = evaluate_ytvis(gt_path, res_path, timings=timings)  # pauses the garbage collector itself
    seconds = time.perf_counter() - tic
    stats = [out[k] for k in STAT_NAMES]
elif kind == "reference":
    from local2global.evaluation.ytvis_reference import REF_STAT_NAMES, evaluate_ytvis_reference
    timings = {}
    gc.disable()
    tic = time.perf_counter()
    out = evaluate_ytvis_reference(gt_path, res_path)
    seconds = time.perf_counter() - tic
    stats = [out[k] for k in REF_STAT_NAMES]
else:  # "official" (as shipped: garbage collector on) or "official-nogc"
    import numpy as np
    np.float, np.int = float, int  # aliases removed from numpy, used by the official code
    _linspace = np.linspace
    def _int_num_linspace(start, stop, num=50, *args, **kwargs):  # it passes a float num (numpy < 1.18 style)
        return _linspace(start, stop, int(round(float(num))), *args, **kwargs)
    np.linspace = _int_num_linspace
    package = None
    for cand in [official_dir] + sorted(os.path.join(official_dir, d) for d in os.listdir(official_dir)):
        if os.path.isfile(os.path.join(cand, "ytvos.py")) and os.path.isfile(os.path.join(cand, "ytvoseval.py")):
            package = cand
            break
    if package is None:
        raise SystemExit(f"no ytvos.py + ytvoseval.py in {official_dir} or its subdirectories")
    sys.path.insert(0, os.path.dirname(os.path.abspath(package)))
    import importlib
    YTVOS = importlib.import_module(os.path.basename(package) + ".ytvos").YTVOS
    YTVOSeval = importlib.import_module(os.path.basename(package) + ".ytvoseval").YTVOSeval
    if kind == "official-nogc":
        gc.disable()
    timings = {}
    with contextlib.redirect_stdout(io.StringIO()):
        tic = time.perf_counter()
        ytvos_gt = YTVOS(gt_path)
        dt = ytvos_gt.loadRes(res_path)
        t_load = time.perf_counter()
        ev = YTVOSeval(ytvos_gt, dt, "segm")
        ev.evaluate()
        t_eval = time.perf_counter()
        ev.accumulate()
        ev.summarize()
        seconds = time.perf_counter() - tic
    timings = {"load_s": t_load - tic, "evaluate_s": t_eval - t_load, "accumulate_summarize_s": tic + seconds - t_eval}
    stats = [float(x) for x in ev.stats]
print(json.dumps({"seconds": seconds, "stats": [float(x) for x in stats], "timings": timings}))
"""


def _timed_run(kind: str, gt_path: str, res_path: str, official_dir: str = "") -> dict:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _TIMED_RUN, kind, gt_path, res_path, official_dir],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"timed {kind} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def benchmark_against_reference(
    preset: str = "ytvis",
    num_videos: int = 300,
    preds_per_video: int = 100,
    seed: int = 0,
    height: int = 720,
    width: int = 1280,
    length_range=(10, 36),
    copy_prob: float = 0.8,
    keep_category_prob: float = 0.7,
    workdir: Optional[str] = None,
    repeats: int = 5,
    reference_repeats: int = 3,
    official_dir: Optional[str] = None,
) -> dict:
    """Time :func:`local2global.evaluation.ytvis.evaluate_ytvis` against the reference (and the official code).

    The set mimics a trained model's output (720p, 10-36 frames, most predictions near a ground-truth object,
    compressed RLE written by ``json.dump``), with the object layout of ``BENCHMARK_PRESETS[preset]``. Every
    evaluator reads the same JSON files from ``workdir`` (a temporary directory by default) end to end (parsing
    included), each sample in a fresh interpreter (imports not timed), the variants interleaved
    (official, ours, reference, official, ours, ...) so that machine drift hits all of them alike; figures are
    medians. The reference loop runs with the garbage collector paused (as :func:`evaluate_ytvis` does
    internally). The official youtubevos/cocoapi pipeline (``YTVOS`` + ``loadRes`` + ``YTVOSeval.evaluate /
    accumulate / summarize``) is timed when ``official_dir`` (default: ``$L2G_YTVOS_OFFICIAL``) holds a copy
    of it, once as shipped (garbage collector on) and with the collector paused; numpy aliases it uses are
    restored at run time in its own interpreter, without touching its files. The IoU stage alone is timed as
    well: the official per-pair loop (``_iou_seq``) over every same-category pair versus the evaluator's
    bound + candidate-IoU stages.

    Returns:
        ``{"fast_s", "reference_s", "ratio", "iou_fast_s", "iou_reference_s", "iou_ratio", "pairs",
        "candidate_pairs", "max_abs_diff", "stats", "num_predictions", "stages_s", "samples_s"}`` and, with the
        official code, ``"official_s", "official_ratio", "official_nogc_s", "official_nogc_ratio",
        "official_max_abs_diff", "official_stages_s"``; ``max_abs_diff`` is the largest difference over the 12
        summary numbers (vs the reference; ``official_max_abs_diff`` vs the official code).
    """
    import os
    import statistics
    import tempfile
    import time
    from collections import defaultdict

    from .results_io import load_ground_truth, load_predictions
    from .ytvis import STAT_NAMES, gc_paused

    official_dir = official_dir if official_dir is not None else os.environ.get(OFFICIAL_ENV, "")
    gt, results = make_random_ytvis(
        num_videos=num_videos, preds_per_video=preds_per_video, seed=seed, height=height, width=width,
        length_range=length_range, gt_encodings=("rle",), pred_encodings=("rle",), copy_prob=copy_prob,
        keep_category_prob=keep_category_prob, **BENCHMARK_PRESETS[preset],
    )
    kinds = ["official", "ours", "reference", "official-nogc"] if official_dir else ["ours", "reference"]
    samples = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        gt_path, res_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "results.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(res_path, "w") as f:
            json.dump(results, f)
        del results
        for r in range(repeats):
            for kind in kinds:
                if kind == "reference" and r >= reference_repeats:
                    continue
                if kind == "official-nogc" and r >= reference_repeats:
                    continue
                samples[kind].append(_timed_run(kind, gt_path, res_path, official_dir))
        # IoU stage of the official loop, on the parsed tracks (top-100 cut ignored: every pair is compared)
        gt_data = load_ground_truth(gt_path)
        preds = load_predictions(res_path, gt_data)
    by_video = defaultdict(lambda: ([], []))
    for g in gt_data.tracks:
        by_video[g.video_id][1].append(g)
    for d in preds:
        by_video[d.video_id][0].append(d)
    with gc_paused():
        tic = time.perf_counter()
        pairs = 0
        for dts, gts in by_video.values():
            for d in dts:
                for g in gts:
                    if g.category_id == d.category_id:
                        pairs += 1
                        _iou_seq(d.rles, g.rles)
        iou_ref_s = time.perf_counter() - tic

    def med(kind, key=None):
        return statistics.median(s["seconds"] if key is None else s["timings"][key] for s in samples[kind])

    ours = samples["ours"][0]
    stages = {k: med("ours", k) for k, v in ours["timings"].items() if k.endswith("_s")}
    iou_fast_s = stages["pairs_and_bound_s"] + stages["candidate_iou_s"]
    fast_s, ref_s = med("ours"), med("reference")

    def max_diff(kind):
        return max(abs(a - b) for s in samples[kind] for a, b in zip(s["stats"], ours["stats"]))

    out = {"preset": preset, "fast_s": fast_s, "reference_s": ref_s, "ratio": ref_s / fast_s,
           "iou_fast_s": iou_fast_s, "iou_reference_s": iou_ref_s, "iou_ratio": iou_ref_s / iou_fast_s,
           "pairs": pairs, "candidate_pairs": int(ours["timings"]["candidate_pairs"]),
           "max_abs_diff": max_diff("reference"), "stats": dict(zip(STAT_NAMES, ours["stats"])),
           "num_predictions": num_videos * preds_per_video, "stages_s": stages,
           "samples_s": {k: [s["seconds"] for s in v] for k, v in samples.items()}}
    if official_dir:
        out.update({"official_s": med("official"), "official_ratio": med("official") / fast_s,
                    "official_nogc_s": med("official-nogc"), "official_nogc_ratio": med("official-nogc") / fast_s,
                    "official_max_abs_diff": max(max_diff("official"), max_diff("official-nogc")),
                    "official_stages_s": {k: med("official", k) for k in samples["official"][0]["timings"]}})
    return out

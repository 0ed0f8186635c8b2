"""VPQ and STQ of a VIPSeg-format prediction folder in one pass, the results table and the CLI.

``python -m local2global.evaluation.vps --gt-json GT.json --gt-dir panomasksRGB --pred-json pred.json
--pred-dir pan_pred [--output results.json] [--num-workers N]``

Every frame pair is read once (the official VPQ reads each frame once per window containing it, the official
STQ a second time); both metrics are computed from the same per-frame pair histograms
(:mod:`.video_tables`), video by video, so memory holds one video's tables at a time. Videos can be spread over
worker processes (``num_workers``); the sums are exact integers (the IoU sums are floats, added in a different
order than the official loop: differences are at the 1e-15 level).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import time
from collections import OrderedDict
from functools import partial
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .panoptic_io import (
    FrameSegments,
    GroundTruthVideo,
    VPSFormatError,
    VPSGroundTruth,
    load_vps_ground_truth,
    load_vps_predictions,
    read_id_png,
)
from .stq import STQAccumulator
from .video_tables import VideoTables, build_video_tables
from .vpq import VPQ_WINDOW_SIZES, VPQAccumulator, vpq_summary

logger = logging.getLogger(__name__)

__all__ = ["evaluate_vps", "format_vps_table", "main", "METRIC_KEYS"]

#: Summary keys (percent).
METRIC_KEYS = ("VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "SQ")


def _video_tables(item: Tuple[GroundTruthVideo, List[FrameSegments]], gt_dir: str, pred_dir: str) -> VideoTables:
    video, pred_frames = item
    gt_paths = [os.path.join(gt_dir, video.video_id, f) for f in video.file_names]
    pred_paths = [os.path.join(pred_dir, video.video_id, f) for f in video.file_names]
    return build_video_tables(
        video.video_id, video.frames, pred_frames,
        lambda t: read_id_png(gt_paths[t], video.video_id, "ground-truth"),
        lambda t: read_id_png(pred_paths[t], video.video_id, "prediction"),
        gt_paths, pred_paths,
    )


def _iter_tables(items, gt_dir, pred_dir, num_workers) -> Iterable[VideoTables]:
    fn = partial(_video_tables, gt_dir=gt_dir, pred_dir=pred_dir)
    if num_workers <= 1:
        yield from map(fn, items)
        return
    with mp.get_context("spawn").Pool(num_workers) as pool:
        yield from pool.imap(fn, items, chunksize=1)


def evaluate_vps(
    gt_json: str,
    gt_dir: str,
    pred_json: Optional[str],
    pred_dir: str,
    predictions: Optional[dict] = None,
    window_sizes: Sequence[int] = VPQ_WINDOW_SIZES,
    num_workers: int = 0,
    metrics: Sequence[str] = ("vpq", "stq"),
) -> "OrderedDict[str, object]":
    """Score predictions in the VIPSeg 720p format with the official VPQ and STQ.

    Args:
        gt_json: ground-truth JSON (``panoptic_gt_VIPSeg_val.json`` layout). gt_dir: its RGB id PNGs
            (``panomasksRGB``), ``<gt_dir>/<video_id>/<file_name>``.
        pred_json: prediction JSON (``pred.json``; may be None when ``predictions`` is given).
        pred_dir: prediction PNGs ``<pred_dir>/<video_id>/<gt file_name>`` (the official ``pan_pred``).
        predictions: an already loaded prediction JSON object (instead of reading ``pred_json``).
        window_sizes: VPQ window sizes in frames (default the official 1, 2, 4, 6, 8).
        num_workers: processes over videos (0 or 1: in this process).
        metrics: ``"vpq"`` and / or ``"stq"`` (the other's keys are then absent).

    Returns:
        ``OrderedDict`` with ``VPQ``, ``VPQ_th``, ``VPQ_st``, ``STQ``, ``AQ``, ``SQ`` (percent; ``nan`` where
        undefined), ``per_window`` (:meth:`VPQAccumulator.results`), ``stq`` (deeplab2's result dict, fractions),
        ``num_videos``, ``num_frames``, ``seconds``.

    Raises:
        VPSFormatError: malformed or inconsistent inputs (the message names the file and the video).
    """
    start = time.perf_counter()
    gt: VPSGroundTruth = load_vps_ground_truth(gt_json)
    preds = load_vps_predictions(pred_json or "<predictions>", gt, predictions)
    vpq = VPQAccumulator(gt.categories, window_sizes)
    stq = STQAccumulator(gt.categories)
    known = set(vpq.cat_ids.tolist())
    unknown_gt = sorted({int(c) for v in gt.videos for f in v.frames for c in f.category_ids} - known)
    if unknown_gt:
        logger.warning("%s: ground-truth segments of categories %s not in 'categories' (they can only be false "
                       "negatives, and are left out of the averages, as in the official script)", gt_json, unknown_gt)
    area_mismatch = 0
    n_frames = 0
    items = [(v, preds[v.video_id]) for v in gt.videos]
    unknown_metrics = set(metrics) - {"vpq", "stq"}
    if unknown_metrics or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of ('vpq', 'stq'), got {list(metrics)}")
    for tb in _iter_tables(items, gt_dir, pred_dir, num_workers):
        vpq.check_pred_categories(tb)
        if "vpq" in metrics:
            vpq.add_video(tb)
        if "stq" in metrics:
            stq.add_video(tb)
        area_mismatch += int((tb.gt_present & (tb.gt_area != tb.gt_png_area)).sum())
        n_frames += tb.num_frames
    if area_mismatch:
        logger.warning("%s: %d frame segments have a JSON 'area' different from their PNG pixel count (VPQ uses "
                       "the JSON areas, as the official script)", gt_json, area_mismatch)
    out: "OrderedDict[str, object]" = OrderedDict()
    if "vpq" in metrics:
        per_window = vpq.results()
        out.update(vpq_summary(per_window))
    if "stq" in metrics:
        stq_res = stq.result()
        out["STQ"] = 100 * stq_res["STQ"]
        out["AQ"] = 100 * stq_res["AQ"]
        out["SQ"] = 100 * stq_res["IoU"]
    if "vpq" in metrics:
        out["per_window"] = per_window
    if "stq" in metrics:
        out["stq"] = stq_res
    out["num_videos"] = len(gt.videos)
    out["num_frames"] = n_frames
    out["seconds"] = time.perf_counter() - start
    return out


def _fmt(x: float) -> str:
    return "  nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:5.2f}"


def format_vps_table(res: Dict[str, object]) -> str:
    """The per-window VPQ table (All / Things / Stuff: PQ SQ RQ N) and the summary line (percent)."""
    lines = [f"{'window':>10s} | {'subset':8s} | {'PQ':>5s} {'SQ':>5s} {'RQ':>5s} {'N':>4s}", "-" * 46]
    for w in res.get("per_window", []):
        for name in ("All", "Things", "Stuff"):
            r = w[name]
            lines.append(f"{'k=' + str(w['k']):>10s} | {name:8s} | {_fmt(r['pq'])} {_fmt(r['sq'])} {_fmt(r['rq'])} {r['n']:4d}")
    lines.append("-" * 46)
    lines.append("  ".join(f"{k} {_fmt(res[k]).strip()}" for k in METRIC_KEYS if k in res))
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_results_json(res: Dict[str, object], path: str) -> None:
    """Write the results (``nan`` as ``null``) atomically."""
    tmp = f"{path}.tmp{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(_jsonable(res), f, indent=1)
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> "OrderedDict[str, object]":
    """CLI: print the table, write the results JSON (default ``<pred-dir>/../vps_results.json``)."""
    parser = argparse.ArgumentParser(description="VPQ and STQ of VIPSeg-format predictions (the official definitions).")
    parser.add_argument("--gt-json", required=True, help="ground-truth JSON, e.g. VIPSeg_720P/panoptic_gt_VIPSeg_val.json")
    parser.add_argument("--gt-dir", required=True, help="ground-truth RGB id PNGs, e.g. VIPSeg_720P/panomasksRGB")
    parser.add_argument("--pred-json", required=True, help="prediction JSON (the official pred.json)")
    parser.add_argument("--pred-dir", required=True, help="prediction PNGs <pred-dir>/<video>/<frame>.png (pan_pred)")
    parser.add_argument("--output", default=None, help="results JSON to write (default: next to --pred-json)")
    parser.add_argument("--num-workers", type=int, default=0, help="processes over videos (default: this one)")
    parser.add_argument("--metrics", nargs="+", default=["vpq", "stq"], choices=["vpq", "stq"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        res = evaluate_vps(args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, num_workers=args.num_workers,
                           metrics=args.metrics)
    except (VPSFormatError, OSError) as e:
        parser.exit(2, f"error: {e}\n")
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.pred_json)), "vps_results.json")
    write_results_json(res, out)
    print(format_vps_table(res))
    print(f"{res['num_videos']} videos, {res['num_frames']} frames, {res['seconds']:.1f} s; wrote {out}")
    return res

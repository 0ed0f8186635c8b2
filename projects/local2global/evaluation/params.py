"""The official ``ytvoseval`` parameters: area ranges, maxDets, IoU thresholds and the names of the numbers.

Shared by :mod:`.matching`, :mod:`.accumulate` and :mod:`.ytvis` (which re-exports the public ones).
"""

from __future__ import annotations

from typing import List

from pycocotools.cocoeval import COCOeval

__all__ = ["AREA_RANGES", "AREA_LABELS", "MAX_DETS", "STAT_NAMES", "REPORTED_STATS", "LONG_SHORT_KEYS"]

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
#: The official IoU thresholds 0.50:0.05:0.95 (pycocotools' ``Params``, the same linspace as ytvoseval).
_IOU_THRS = COCOeval(iouType="segm").params.iouThrs

"""Video-level IoU of whole-video tracks and the exact IoU upper bound that prunes (prediction, gt) pairs.

* :func:`video_track_ious` -- the exact IoU of every (prediction, gt) pair of one video (a helper for tests);
* :func:`iou_upper_bound_prunes` -- which pairs can match at no threshold, from frame areas alone (with proof).

The evaluator (:class:`.matching._Matches`) computes the IoUs of the pairs that survive the bound in one
pycocotools call per video; :mod:`.ytvis` re-exports both functions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .ytvis_format import Track

__all__ = ["video_track_ious", "iou_upper_bound_prunes"]


# ----------------------------------------------------------------------------------------------------------
# IoU between whole-video tracks
# ----------------------------------------------------------------------------------------------------------
def video_track_ious(dts: Sequence[Track], gts: Sequence[Track]) -> np.ndarray:
    """Video-level IoU of every (prediction, gt) pair of one video (exact, no pruning; a helper for tests).

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
# The exact IoU upper bound (pruning of pairs that cannot match)
# ----------------------------------------------------------------------------------------------------------
def iou_upper_bound_prunes(min_sum: np.ndarray, area_d: np.ndarray, area_g: np.ndarray) -> np.ndarray:
    """Which (prediction, gt) pairs can never match at any IoU threshold (exact, from frame areas alone).

    Args:
        min_sum: ``(P,)`` int64 ``S = Σ_t min(|d_t|, |g_t|)`` per pair.
        area_d, area_g: ``(P,)`` int64 ``A = Σ_t |d_t|`` and ``B = Σ_t |g_t|``.

    Returns:
        ``(P,)`` bool, True where the pair's official IoU is certainly below 0.5, so that treating it as 0 leaves
        every ``evalImgs`` entry unchanged.

    Proof. Per frame ``|d_t ∩ g_t| <= min(|d_t|, |g_t|)``, so the video intersection ``I <= S``; the video union is
    ``U = A + B - I`` (an empty or null frame has area 0), so ``IoU = I / (A + B - I)`` grows with ``I`` and
    ``IoU <= S / (A + B - S)``. If ``3 S < A + B`` (integers: exact), then ``S / (A + B - S) < 1/2``, hence the
    exact quotient ``I / U < 1/2``. The official value is the float64 quotient of the exact integers ``I`` and
    ``U``; for ``U < 2^53``, ``1/2 - I/U >= 1/(2U) > 2^-54``, which exceeds half the float spacing just below 1/2
    (2^-55), so it rounds to a value < 0.5 as well (``S = 0`` gives ``I = 0``, IoU 0). The matching
    (``evaluateImg``) compares IoUs only against a running best that starts at ``min(thr, 1 - 1e-10) >= 0.5``
    and skips any value below it (``if iou < best: continue``); the break on ignored gts does not read IoUs.
    So any IoU < 0.5 and 0 produce the same matches, at every threshold and area range.
    """
    return ~((min_sum > 0) & (3 * min_sum >= area_d + area_g))

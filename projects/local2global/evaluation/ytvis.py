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
:mod:`local2global.evaluation.ytvis_reference`); every shortcut is exact, and each is tested against the code
it replaces (``tests/test_ytvis_fast.py``):

* loading (:mod:`.results_io`): the RLE objects of a results file are cut out by a regex pass over the
  memory-mapped file and stay ``bytes`` (what pycocotools reads); only the small remainder is parsed (orjson);
  the predictions are validated in bulk (C-level ``map`` / ``set`` passes instead of Python code per frame), and
  every mask's area comes from batched pycocotools ``area`` calls while the bytes are cache-hot;
* pruning (:func:`iou_upper_bound_prunes`): ``IoU <= S / (A + B - S)`` with ``S = Σ_t min(|d_t|, |g_t|)``; a pair
  whose bound is below 0.5 can match at no threshold, so its IoU is never computed (on the benchmark sets 22%
  of the same-category pairs remain, 6% in crowded scenes);
* IoU of the remaining pairs: ONE ``pycocotools.mask.iou`` call per video walks exactly the needed (pair, frame)
  combinations (distinct declared sizes keep it from walking any other); the integer intersection is
  recovered exactly from each frame's IoU, summed over frames, and the video IoU is the float64 quotient of the
  exact integers, bit-identical to the official one;
* matching: predictions with a single candidate gt (IoU >= 0.5) are matched in bulk (a non-crowd gt goes to its
  first candidate in score order reaching the threshold); (video, category) pairs where a prediction has two
  candidates run the official greedy loop (:func:`_greedy_matches`);
* accumulate (:func:`accumulate_events`): pycocotools' ``accumulate`` computed from the true-positive events and
  false-positive running sums (the precision envelope only changes at true positives), vectorised over
  categories; ``summarize`` is pycocotools' own.
* Python's cyclic garbage collector is paused during the evaluation (:func:`gc_paused`).

Returned numbers: :func:`evaluate_ytvis` returns raw fractions in [0, 1] (``-1`` where undefined, e.g. no
ground truth in an area range), as pycocotools does; :class:`YTVISEvaluator` and the CLI report percent
(detectron2 convention, ``nan`` where undefined).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import io
import itertools
import logging
import os
import time
from collections import OrderedDict, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from .results_io import (
    RESULTS_JSON_NAME,
    GroundTruth,
    JsonSource,
    PredictionArrays,
    Track,
    YTVISFormatError,
    atomic_write_json,
    load_ground_truth,
    load_json,
    load_prediction_arrays,
    rle_counts,
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
    "iou_upper_bound_prunes",
    "accumulate_events",
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
#: The official IoU thresholds 0.50:0.05:0.95 (pycocotools' ``Params``, the same linspace as ytvoseval).
_IOU_THRS = COCOeval(iouType="segm").params.iouThrs
#: log2 of the number of (pair, frame) entries processed at once by the IoU bound.
_CHUNK_BITS = 18


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
# Exact pruning, IoU of the candidate pairs and greedy matching (the official computeIoU / evaluateVid)
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


def _greedy_matches(ious: np.ndarray, g_crowd: np.ndarray, g_ignore: np.ndarray, thrs: Sequence[float]) -> np.ndarray:
    """pycocotools' ``evaluateImg`` greedy matching for one (video, category, area range).

    Args:
        ious: ``(D, G)`` IoUs, rows = predictions in score order (stable, cut to maxDet), columns = gts in
            file order; values below 0.5 may be given as 0 (:func:`iou_upper_bound_prunes`).
        g_crowd, g_ignore: ``(G,)`` crowd and ignore flags of the gts (file order).
        thrs: the T matching thresholds, already capped at ``1 - 1e-10``.

    Returns:
        ``(T, D)`` int64: the column of the matched gt, -1 where unmatched.

    A prediction whose best IoU is below a threshold cannot match at that threshold, so only the others are
    visited (thresholds increase, so the loop stops at the first threshold without any candidate).
    """
    num_d, num_g = ious.shape
    out = np.full((len(thrs), num_d), -1, dtype=np.int64)
    gtind = np.argsort(g_ignore, kind="mergesort")  # not-ignored first, stable (as evaluateImg)
    ig = g_ignore[gtind].tolist()
    crowd = g_crowd[gtind].tolist()
    rows = ious[:, gtind].tolist()
    best = ious.max(axis=1)
    for tind, thr in enumerate(thrs):
        candidates = np.flatnonzero(best >= thr)
        if candidates.size == 0:
            break
        taken = [False] * num_g
        for dind in candidates.tolist():
            row = rows[dind]
            iou = thr
            m = -1
            for gind in range(num_g):
                if taken[gind] and not crowd[gind]:
                    continue
                if m > -1 and ig[m] == 0 and ig[gind] == 1:
                    break
                if row[gind] < iou:
                    continue
                iou = row[gind]
                m = gind
            if m > -1:
                taken[m] = True
                out[tind, dind] = gtind[m]
    return out


def _segments(lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(owner, offset)`` of ``sum(lengths)`` flat slots: slot ``j`` belongs to segment ``owner[j]``."""
    owner = np.repeat(np.arange(lengths.size), lengths)
    starts = np.cumsum(lengths) - lengths
    return owner, np.arange(owner.size) - starts[owner]


class _Matches:
    """Official per-(video, category) matching of every kept prediction, at every threshold and area range.

    Attributes (``Nd`` kept predictions, in (video, category, score rank) order; ``G`` gts in file order):
        d_vpos, d_k, d_rank, d_score: ``(Nd,)`` video position, category index, rank within its
            (video, category) (stable score order) and score.
        fp_base: ``(A, Nd)`` bool, the false-positive flag of an unmatched prediction (inside the area range).
        tp_events, fp_flips: per area range ``(t, d)`` arrays: prediction ``d`` is a true positive at threshold
            ``t`` (matched to a counted gt); its false-positive flag at ``t`` is not ``fp_base`` (matched, in range).
        g_vpos, g_k: ``(G,)``; g_counted: ``(A, G)`` True where the gt is not ignored (crowd / area range).
        num_pairs, num_candidates: same-category pairs, and pairs whose IoU had to be computed.
        num_greedy_groups: (video, category) pairs matched by the greedy loop (a prediction with 2+ candidates).
    """

    def __init__(self, gt: GroundTruth, preds: PredictionArrays, max_dets: int, timings: Optional[dict] = None):
        tic = time.perf_counter()
        video_ids = np.array(sorted(gt.videos), dtype=np.int64)
        cat_ids = np.array(gt.category_ids, dtype=np.int64)
        num_k = cat_ids.size
        thrs = [min(float(t), _MAX_IOU_THR) for t in _IOU_THRS]
        num_a, num_t = len(AREA_RANGES), len(thrs)
        # ---- ground truth as arrays
        gts = gt.tracks
        num_g = len(gts)
        g_vpos = np.searchsorted(video_ids, np.array([g.video_id for g in gts], dtype=np.int64))
        g_k = np.searchsorted(cat_ids, np.array([g.category_id for g in gts], dtype=np.int64))
        g_avg = np.array([g.avg_area for g in gts], dtype=np.float64)
        g_crowd = np.array([g.iscrowd for g in gts], dtype=bool)
        g_len = np.array([len(g.rles) for g in gts], dtype=np.int64)
        g_start = np.cumsum(g_len) - g_len
        g_frame_area = (np.concatenate([g.frame_areas for g in gts]) if gts else np.zeros(0)).astype(np.int64)
        g_rles = list(itertools.chain.from_iterable(g.rles for g in gts))
        g_total = np.zeros(num_g, dtype=np.int64)
        if num_g:
            g_total = np.add.reduceat(g_frame_area, g_start)
        # ---- predictions: stable score order within (video, category), cut to max_dets
        p_vpos = np.searchsorted(video_ids, preds.video_id)
        p_k = np.searchsorted(cat_ids, preds.category_id)
        order = np.lexsort((-preds.score, p_k, p_vpos))  # stable: ties keep file order
        key = (p_vpos * num_k + p_k)[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = key[1:] != key[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(order.size), 0)) if order.size else order
        rank = np.arange(order.size) - group_start
        kept = order[rank < max_dets]
        self.d_rank = rank[rank < max_dets]
        self.d_vpos, self.d_k, self.d_score = p_vpos[kept], p_k[kept], preds.score[kept]
        num_d = kept.size
        d_start, d_len, d_total = preds.start[kept], preds.length[kept], preds.total_area[kept]
        d_key = self.d_vpos * num_k + self.d_k
        # ---- every same-category (prediction, gt) pair of a video and its area bound
        g_key = g_vpos * num_k + g_k
        g_order = np.lexsort((np.arange(num_g), g_key))
        g_key_sorted = g_key[g_order]
        lo = np.searchsorted(g_key_sorted, d_key, side="left")
        cnt = np.searchsorted(g_key_sorted, d_key, side="right") - lo
        pair_d, within = _segments(cnt)
        pair_g = g_order[lo[pair_d] + within]
        self.num_pairs = int(pair_d.size)
        pair_a, pair_b = d_total[pair_d], g_total[pair_g]
        pair_len = d_len[pair_d]
        pair_min = np.zeros(pair_d.size, dtype=np.int64)
        cand = np.zeros(pair_d.size, dtype=bool)
        # The pair-frames are visited in chunks of bounded size, so that their arrays reuse the same memory
        # (first-touch page faults of large fresh arrays cost more than the arithmetic).
        frames = []
        chunk = 1 << _CHUNK_BITS
        cuts = np.searchsorted(np.cumsum(pair_len), np.arange(1, int(pair_len.sum()) // chunk + 1) * chunk,
                               side="right")
        bounds = np.unique(np.concatenate([[0], cuts, [pair_d.size]])).tolist()
        for p0, p1 in zip(bounds[:-1], bounds[1:]):
            pf_pair, pf_t = _segments(pair_len[p0:p1])
            pf_pair += p0
            pf_d = d_start[pair_d[pf_pair]] + pf_t  # flat frame index of the prediction
            pf_g = g_start[pair_g[pf_pair]] + pf_t  # flat frame index of the gt
            pf_a = preds.frame_area[pf_d]
            pf_b = g_frame_area[pf_g]
            pf_min = np.minimum(pf_a, pf_b)
            pair_min[p0:p1] = np.add.reduceat(pf_min, np.cumsum(pair_len[p0:p1]) - pair_len[p0:p1])
            cand[p0:p1] = ~iou_upper_bound_prunes(pair_min[p0:p1], pair_a[p0:p1], pair_b[p0:p1])
            sel = np.flatnonzero(cand[pf_pair] & (pf_min > 0))
            frames.append((pf_pair[sel], pf_d[sel], pf_g[sel], pf_t[sel], pf_a[sel], pf_b[sel]))
        if not frames:
            frames.append(tuple(np.zeros(0, dtype=np.int64) for _ in range(6)))
        c_pair, c_d, c_g, c_t, c_a, c_b = (np.concatenate(x) for x in zip(*frames))
        self.num_candidates = int(np.count_nonzero(cand))
        toc = time.perf_counter()
        # ---- exact intersections of the candidate pairs on the frames where both masks are non-empty
        inter = self._intersections(gt, preds, video_ids, num_k, c_d, c_g, c_t, self.d_vpos[pair_d[c_pair]],
                                    self.d_k[pair_d[c_pair]], c_a, c_b, g_rles, timings)
        cand_idx = np.flatnonzero(cand)
        pos = np.full(pair_d.size, -1, dtype=np.int64)
        pos[cand_idx] = np.arange(cand_idx.size)
        inter_sum = np.bincount(pos[c_pair], weights=inter, minlength=cand_idx.size).astype(np.int64)
        union = pair_a[cand_idx] + pair_b[cand_idx] - inter_sum
        cand_iou = inter_sum / union  # exact integers: the official float64 quotient
        keep = cand_iou >= 0.5
        m_d, m_g, m_iou = pair_d[cand_idx[keep]], pair_g[cand_idx[keep]], cand_iou[keep]
        tic2 = time.perf_counter()
        # ---- matching: predictions with a single candidate gt in bulk, the greedy loop where gts compete;
        # the result is the list of matches (area range, threshold, prediction, gt)
        lo_a = np.array([r[0] for r in AREA_RANGES])
        hi_a = np.array([r[1] for r in AREA_RANGES])
        g_ignore = g_crowd[None, :] | (g_avg[None, :] < lo_a[:, None]) | (g_avg[None, :] > hi_a[:, None])
        shared = np.zeros(m_d.size, dtype=bool)
        if m_d.size:
            shared = np.bincount(m_d, minlength=num_d)[m_d] > 1  # a prediction with >= 2 candidate gts
            shared = np.isin(d_key[m_d], d_key[m_d[shared]])
        st, sd, sg = self._match_single(m_d[~shared], m_g[~shared], m_iou[~shared], g_crowd, thrs)
        ev = [(np.repeat(np.arange(num_a), st.size), np.tile(st, num_a), np.tile(sd, num_a), np.tile(sg, num_a))]
        self.num_greedy_groups = 0
        for grp in np.unique(d_key[m_d[shared]]).tolist():
            self.num_greedy_groups += 1
            d0, d1 = np.searchsorted(d_key, grp, side="left"), np.searchsorted(d_key, grp, side="right")
            g_cols = g_order[np.searchsorted(g_key_sorted, grp, "left"):np.searchsorted(g_key_sorted, grp, "right")]
            col = {g: j for j, g in enumerate(g_cols.tolist())}
            ious = np.zeros((d1 - d0, g_cols.size))
            e = np.flatnonzero(d_key[m_d] == grp)
            ious[m_d[e] - d0, [col[g] for g in m_g[e].tolist()]] = m_iou[e]
            for a in range(num_a):
                local = _greedy_matches(ious, g_crowd[g_cols], g_ignore[a, g_cols], thrs)
                tt, dd = np.nonzero(local >= 0)
                ev.append((np.full(tt.size, a), tt, dd + d0, g_cols[local[tt, dd]]))
        ev_a, ev_t, ev_d, ev_g = (np.concatenate(x).astype(np.int64) for x in zip(*ev))
        # ---- per area range: true positives (match to a counted gt) and false positives (unmatched, in range)
        d_avg = preds.avg_area[kept]
        inside = ~((d_avg[None, :] < lo_a[:, None]) | (d_avg[None, :] > hi_a[:, None]))  # (A, Nd)
        counted = ~g_ignore
        self.fp_base = inside
        self.tp_events, self.fp_flips = [], []
        for a in range(num_a):
            at = ev_a == a
            t_a, d_a, g_a = ev_t[at], ev_d[at], ev_g[at]
            c = counted[a, g_a]
            self.tp_events.append((t_a[c], d_a[c]))
            f = inside[a, d_a]
            self.fp_flips.append((t_a[f], d_a[f]))
        self.g_vpos, self.g_k, self.g_counted = g_vpos, g_k, counted
        self.num_k, self.num_t = num_k, num_t
        if timings is not None:
            timings["pairs_and_bound_s"] = toc - tic
            timings["candidate_iou_s"] = tic2 - toc
            timings["matching_s"] = time.perf_counter() - tic2

    @staticmethod
    def _match_single(m_d, m_g, m_iou, g_crowd, thrs) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The greedy matching of (video, category) pairs where no prediction has two candidate gts, in bulk.

        Args:
            m_d, m_g, m_iou: ``(E,)`` candidate pairs (IoU >= 0.5); every prediction appears at most once, and
                prediction indices grow with the score rank within a (video, category).

        Returns:
            ``(t, d, g)`` int arrays: prediction ``d`` matches gt ``g`` at threshold ``t`` (any area range).

        In ``evaluateImg`` a prediction then has one gt it can take at threshold ``thr`` (IoU >= thr), and the
        break on ignored gts only applies once a gt has been found, so the area range plays no part: the
        prediction takes its gt iff the gt is a crowd or no higher-ranked prediction took it, i.e. a non-crowd
        gt goes to its first candidate (in rank order) reaching ``thr``, a crowd gt to all of them.
        """
        if m_d.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        order = np.lexsort((m_d, m_g))  # by gt, then by rank
        d, g, iou = m_d[order], m_g[order], m_iou[order]
        hit_t, hit_e = np.nonzero(iou[None, :] >= np.asarray(thrs)[:, None])  # sorted by (t, gt, rank)
        key = hit_t * (int(g.max()) + 1) + g[hit_e]
        first = np.ones(key.size, dtype=bool)
        first[1:] = key[1:] != key[:-1]
        take = first | g_crowd[g[hit_e]]
        return hit_t[take], d[hit_e[take]], g[hit_e[take]]

    @staticmethod
    def _intersections(gt, preds, video_ids, num_k, d_frame, g_frame, t, vpos, k, a, b, g_rles,
                       timings: Optional[dict] = None) -> np.ndarray:
        """``|d_t ∩ g_t|`` of the given pair-frames (sorted by video): one ``pycocotools.mask.iou`` call per video.

        pycocotools compares only RLEs of equal size and skips pairs whose boxes do not overlap. Each pair-frame's
        prediction RLE is declared with the size ``[H, W + 1 + f]``, ``f`` the flat index of the gt frame it is
        compared with, and every gt frame RLE with its own ``f``: pycocotools then walks exactly the pair-frames
        asked for (each gt frame RLE is decoded once per video). Neither the run-length decoding nor the bounding
        box (which only uses the height) depends on the declared width. The intersection is recovered exactly
        from the IoU: ``iou = i / (a + b - i)`` gives ``i = iou * (a + b) / (1 + iou)``, an integer below 2^32
        recovered from float64 with an error far below 1/2.
        """
        if d_frame.size == 0:
            return np.zeros(0)
        num_fg = len(g_rles)
        ug, g_first, g_inv = np.unique(vpos * num_fg + g_frame, return_index=True, return_inverse=True)
        heights = {i: gt.videos[v].height for i, v in enumerate(video_ids.tolist())}
        widths = {i: gt.videos[v].width for i, v in enumerate(video_ids.tolist())}
        d_counts = rle_counts(preds.rles, preds.frame_rle[d_frame])
        d_list = [{"size": [heights[v], widths[v] + 1 + f], "counts": c}
                  for c, v, f in zip(d_counts, vpos.tolist(), g_frame.tolist())]
        g_list = [{"size": [heights[v], widths[v] + 1 + f], "counts": g_rles[f]["counts"]}
                  for f, v in zip(g_frame[g_first].tolist(), vpos[g_first].tolist())]
        videos = np.unique(vpos).tolist() + [np.iinfo(np.int64).max]
        g_bounds = np.searchsorted(ug // num_fg, videos).tolist()
        p_bounds = np.searchsorted(vpos, videos).tolist()
        iou = np.empty(d_frame.size)
        iou_s = 0.0
        for j in range(len(videos) - 1):
            g0, g1, p0, p1 = g_bounds[j], g_bounds[j + 1], p_bounds[j], p_bounds[j + 1]
            tic = time.perf_counter()
            o = np.asarray(mask_utils.iou(d_list[p0:p1], g_list[g0:g1], np.zeros(g1 - g0, dtype=np.uint8)))
            iou_s += time.perf_counter() - tic
            iou[p0:p1] = o.reshape(p1 - p0, g1 - g0)[np.arange(p1 - p0), g_inv[p0:p1] - g0]
        if timings is not None:
            timings["candidate_iou_pycocotools_s"] = iou_s
        return np.rint(iou * (a + b) / (1.0 + iou))


# ----------------------------------------------------------------------------------------------------------
# Accumulate (vectorised pycocotools COCOeval.accumulate) and summarize (pycocotools' own)
# ----------------------------------------------------------------------------------------------------------
def accumulate_events(
    det_k: np.ndarray,
    det_vpos: np.ndarray,
    det_rank: np.ndarray,
    det_score: np.ndarray,
    fp_base: np.ndarray,
    tp_events: Sequence[Tuple[np.ndarray, np.ndarray]],
    fp_flips: Sequence[Tuple[np.ndarray, np.ndarray]],
    npig: np.ndarray,
    max_dets: Sequence[int],
    rec_thrs: np.ndarray,
    num_t: int,
    det_mask: Optional[np.ndarray] = None,
) -> Dict[str, np.ndarray]:
    """pycocotools ``COCOeval.accumulate``, computed from the few events that decide it.

    Args:
        det_k, det_vpos, det_rank: ``(N,)`` (or ``(A, N)``: per area range) int per detection: category index,
            position of its image (video) in ``imgIds``, position in its ``evalImgs`` entry (what ``[0:maxDet]``
            cuts).
        det_score: ``(N,)`` (or ``(A, N)``) float64 ``dtScores``.
        fp_base: ``(A, N)`` bool: the false-positive flag of each detection at most thresholds.
        tp_events: per area range ``(t, d)`` int arrays: detection ``d`` is a true positive at threshold ``t``
            (``dtMatches != 0`` and not ``dtIgnore``).
        fp_flips: per area range ``(t, d)``: the false-positive flag at threshold ``t`` is ``not fp_base[d]``.
        npig: ``(K, A)`` number of not-ignored gts; 0 leaves the entry at -1 (as pycocotools, which also skips
            a (k, a) without any ``evalImgs`` entry: such a pair has no gt).
        max_dets: the M maxDets. rec_thrs: the R recall thresholds. num_t: T.
        det_mask: ``(N,)`` bool, the detections taking part (a video subset); default all.

    Returns:
        ``{"precision": (T, R, K, A, M), "recall": (T, K, A, M), "scores": (T, R, K, A, M)}``, equal to
        pycocotools'.

    Why this equals pycocotools: per (category, area, maxDet), pycocotools concatenates the entries in
    ``imgIds`` order, each cut to ``[0:maxDet]``, sorts them by ``-score`` (stable mergesort) -- here one
    ``lexsort`` by (category, -score, image position, rank) -- and takes running sums ``tp``, ``fp`` per threshold.
    ``rc = tp / npig``; ``pr = tp / (fp + tp + eps)``; the precision at a recall threshold ``r`` is
    ``max(pr[i:])`` at the first ``i`` with ``rc[i] >= r``. Since ``c -> fl(c / npig)`` is non-decreasing,
    ``rc[i] >= r`` iff ``tp[i] >= c_r`` with ``c_r`` the smallest integer such that ``fl(c_r / npig) >= r``; the
    first such ``i`` is the position of the ``c_r``-th true positive (the first detection when ``c_r = 0``). Between
    two true positives ``tp`` is constant and ``fp`` does not decrease, so ``pr`` does not increase: ``max(pr[i:])``
    at a true positive is the maximum of ``pr`` over the true positives from there on, where ``tp`` is their
    count ``j`` and ``fp`` a cumulative sum (``fp_base`` plus the flips). The same float operations are applied
    to the same integers, so the values are bit-identical.
    """
    num_a = len(tp_events)
    num_k, num_m, num_r = npig.shape[0], len(max_dets), len(rec_thrs)
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    scores = -np.ones((num_t, num_r, num_k, num_a, num_m))
    per_area = np.ndim(det_k) == 2
    eps = np.spacing(1)
    rec_thrs = np.asarray(rec_thrs, dtype=np.float64)
    sorted_dets = None
    for a in range(num_a):
        cats = np.flatnonzero(npig[:, a] > 0)
        if cats.size == 0:
            continue
        if per_area or sorted_dets is None:
            k_a = det_k[a] if per_area else det_k
            rank_a = det_rank[a] if per_area else det_rank
            score_a = det_score[a] if per_area else det_score
            vpos_a = det_vpos[a] if per_area else det_vpos
            idx = np.arange(k_a.size) if det_mask is None else np.flatnonzero(det_mask)
            sorted_dets = idx[np.lexsort((rank_a[idx], vpos_a[idx], -score_a[idx], k_a[idx]))]
            sorted_rank = rank_a[sorted_dets]
        # c_r per (category, recall threshold): tp >= c_r  <=>  rc >= r
        c_min = np.stack([np.searchsorted(np.arange(int(npig[k, a]) + 1) / int(npig[k, a]), rec_thrs, side="left")
                          for k in cats.tolist()])  # (Kc, R)
        npig_c = npig[cats, a].astype(np.int64)
        kc_of = np.full(num_k, -1, dtype=np.int64)
        kc_of[cats] = np.arange(cats.size)
        for m, max_det in enumerate(max_dets):
            sel = sorted_dets[sorted_rank < max_det]  # detection ids in accumulate order
            n = sel.size
            k_s, s_s = k_a[sel], score_a[sel]
            pos = np.full(k_a.size, -1, dtype=np.int64)
            pos[sel] = np.arange(n)
            bounds = np.searchsorted(k_s, np.arange(num_k + 1))
            lo, nd = bounds[cats], bounds[cats + 1] - bounds[cats]
            base = fp_base[a][sel]
            base_cum = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(base, out=base_cum[1:])
            # false-positive flips as a running sum over keys t * n + position
            ft, fd = fp_flips[a]
            fpos = pos[fd]
            keep = fpos >= 0
            f_key = ft[keep] * n + fpos[keep]
            f_ord = np.argsort(f_key, kind="stable")
            f_key = f_key[f_ord]
            f_cum = np.zeros(f_key.size + 1, dtype=np.int64)
            np.cumsum(np.where(base[fpos[keep]], -1, 1)[f_ord], out=f_cum[1:])
            # true positives in (threshold, position) order
            tt, td = tp_events[a]
            tpos = pos[td]
            keep = tpos >= 0
            tt, tpos = tt[keep], tpos[keep]
            t_ord = np.lexsort((tpos, tt))
            tt, tpos = tt[t_ord], tpos[t_ord]
            tkc = kc_of[k_s[tpos]]
            valid_kc = tkc >= 0  # true positives of categories without counted gts play no part
            tt, tpos, tkc = tt[valid_kc], tpos[valid_kc], tkc[valid_kc]
            seg_lo = lo[tkc]
            fp_run = (base_cum[tpos + 1] - base_cum[seg_lo]
                      + f_cum[np.searchsorted(f_key, tt * n + tpos, side="right")]
                      - f_cum[np.searchsorted(f_key, tt * n + seg_lo - 1, side="right")])
            group = tt * cats.size + tkc
            num_e = group.size
            first = np.ones(num_e, dtype=bool)
            first[1:] = group[1:] != group[:-1]
            g_start = np.maximum.accumulate(np.where(first, np.arange(num_e), 0)) if num_e else first
            j = (np.arange(num_e) - g_start + 1).astype(np.float64)
            pr = j / (fp_run.astype(np.float64) + j + eps)
            # max of pr over the later true positives of the same (threshold, category): a reverse cumulative
            # maximum on integer keys (group from the end, then the rank of pr among all values)
            env = pr
            if num_e:
                vals, inv = np.unique(pr, return_inverse=True)
                gid = np.cumsum(first) - 1
                rev_key = ((gid[-1] - gid) * vals.size + inv.reshape(-1))[::-1]
                env = vals[(np.maximum.accumulate(rev_key) % vals.size)[::-1]]
            count = np.zeros((num_t, cats.size), dtype=np.int64)
            np.add.at(count, (tt[first], tkc[first]), np.bincount(np.cumsum(first) - 1))
            start = np.zeros((num_t, cats.size), dtype=np.int64)
            start[tt[first], tkc[first]] = np.flatnonzero(first)
            has = nd > 0
            recall[:, cats, a, m] = np.where(has[None, :], count / npig_c[None, :], 0.0)
            # precision / scores at each recall threshold: the c_r-th true positive (c_r = 0: the first detection)
            c = c_min[None, :, :]  # (1, Kc, R)
            reach = (c <= count[:, :, None]) & has[None, :, None]
            at = start[:, :, None] + np.maximum(c, 1) - 1
            at = np.where(reach & (count[:, :, None] > 0), at, 0)
            prec = np.where(reach & (count[:, :, None] > 0), env[at] if num_e else 0.0, 0.0)
            sc = np.where(reach & (c > 0) & (count[:, :, None] > 0), s_s[tpos[at]] if num_e else 0.0, 0.0)
            first_det = np.where(has, lo, 0)
            sc = np.where(reach & (c == 0), s_s[first_det][None, :, None] if n else 0.0, sc)
            precision[:, :, cats, a, m] = prec.transpose(0, 2, 1)
            scores[:, :, cats, a, m] = sc.transpose(0, 2, 1)
    return {"precision": precision, "recall": recall, "scores": scores}


def dense_to_events(tp: np.ndarray, fp: np.ndarray):
    """``(fp_base, tp_events, fp_flips)`` of dense ``(A, T, N)`` true / false positive flags."""
    fp_base = fp[:, 0, :].copy() if fp.shape[1] else np.zeros((fp.shape[0], fp.shape[2]), dtype=bool)
    tp_events = [np.nonzero(tp[a]) for a in range(tp.shape[0])]
    fp_flips = [np.nonzero(fp[a] != fp_base[a][None, :]) for a in range(fp.shape[0])]
    return fp_base, tp_events, fp_flips


def eval_imgs_to_events(eval_imgs: Sequence[Optional[dict]], num_k: int, num_a: int, num_i: int, num_t: int) -> tuple:
    """pycocotools ``evalImgs`` (ordered [category][area][image], ``None`` for empty pairs) as the arguments of
    :func:`accumulate_events` (detections per area range, padded to a common length with detections of rank
    ``2^62``, which every ``[0:maxDet]`` cut removes)."""
    per = [([], [], [], [], [], []) for _ in range(num_a)]
    npig = np.zeros((num_k, num_a), dtype=np.int64)
    for k in range(num_k):
        for a in range(num_a):
            for i in range(num_i):
                e = eval_imgs[(k * num_a + a) * num_i + i]
                if e is None:
                    continue
                npig[k, a] += int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
                nd = len(e["dtScores"])
                if nd == 0:
                    continue
                dtm = np.asarray(e["dtMatches"]).reshape(num_t, nd).astype(bool)
                dtig = np.asarray(e["dtIgnore"]).reshape(num_t, nd).astype(bool)
                ks, vs, rs, ss, tps, fps = per[a]
                ks.append(np.full(nd, k))
                vs.append(np.full(nd, i))
                rs.append(np.arange(nd))
                ss.append(np.asarray(e["dtScores"], dtype=np.float64))
                tps.append(dtm & ~dtig)
                fps.append(~dtm & ~dtig)
    n = max([sum(x.size for x in p[0]) for p in per] + [0])
    det_k = np.zeros((num_a, n), dtype=np.int64)
    det_v = np.zeros((num_a, n), dtype=np.int64)
    det_r = np.full((num_a, n), 1 << 62, dtype=np.int64)
    det_s = np.zeros((num_a, n))
    tp = np.zeros((num_a, num_t, n), dtype=bool)
    fp = np.zeros((num_a, num_t, n), dtype=bool)
    for a, (ks, vs, rs, ss, tps, fps) in enumerate(per):
        if not ks:
            continue
        m = sum(x.size for x in ks)
        det_k[a, :m], det_v[a, :m], det_r[a, :m], det_s[a, :m] = (np.concatenate(x) for x in (ks, vs, rs, ss))
        tp[a, :, :m] = np.concatenate(tps, axis=1)
        fp[a, :, :m] = np.concatenate(fps, axis=1)
    return (det_k, det_v, det_r, det_s, *dense_to_events(tp, fp), npig)


class _PrecomputedCOCOeval(COCOeval):
    """pycocotools' ``COCOeval`` with a vectorised ``accumulate`` (:func:`accumulate_events`); ``summarize`` is
    pycocotools' own.

    ``imgIds`` are video ids. Either the arguments of :func:`accumulate_events` (``events``, what the evaluator
    builds; ``det_mask`` selects a video subset) or pycocotools-style ``evalImgs`` are given. ``summarize``
    hard-codes ``maxDets=100`` for the first number (AP); when the cap is not 100 that one number is recomputed
    the same way on the last maxDets.
    """

    def __init__(self, video_ids: List[int], category_ids: List[int], max_dets: List[int],
                 eval_imgs: Optional[List[Optional[dict]]] = None, events: Optional[tuple] = None,
                 det_mask: Optional[np.ndarray] = None):
        super().__init__(None, None, iouType="segm")
        self.params.imgIds = list(video_ids)
        self.params.catIds = list(category_ids)
        self.params.areaRng = [list(a) for a in AREA_RANGES]
        self.params.areaRngLbl = list(AREA_LABELS)
        self.params.maxDets = list(max_dets)
        self.evalImgs = eval_imgs
        self._events = events
        self._det_mask = det_mask
        self._paramsEval = copy.deepcopy(self.params)

    def accumulate(self, p=None) -> None:
        """Fill ``self.eval`` like ``COCOeval.accumulate`` (same arrays; only the default parameters)."""
        p = self.params if p is None else p
        events = self._events
        if events is None:
            events = eval_imgs_to_events(self.evalImgs, len(p.catIds), len(p.areaRng), len(p.imgIds), len(p.iouThrs))
        out = accumulate_events(*events, max_dets=p.maxDets, rec_thrs=p.recThrs, num_t=len(p.iouThrs),
                                det_mask=self._det_mask)
        self.eval = {
            "params": p,
            "counts": [len(p.iouThrs), len(p.recThrs), len(p.catIds), len(p.areaRng), len(p.maxDets)],
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            **out,
        }

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
    timings: Optional[dict] = None,
) -> "OrderedDict[str, float]":
    """Score a YouTube-VIS / OVIS results file with the official ``ytvoseval`` metric.

    Args:
        gt: ground-truth JSON (path or parsed dict) with annotations.
        results: results JSON (path or parsed list of ``{video_id, category_id, score, segmentations}``).
        long_video_ids: optional ids (or a path to a whitespace/comma separated file) of the "long" videos of
            YouTube-VIS 2022: the long and the short videos are then also scored separately.
        max_dets: the per-(video, category) cap on predictions (the last maxDets; >= 10).
        timings: if a dict is given, the wall time of each stage (s) is stored in it (benchmarks).

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
        return _evaluate_ytvis(gt, results, long_video_ids, max_dets, timings)


def _evaluate_ytvis(gt, results, long_video_ids, max_dets, timings=None) -> "OrderedDict[str, float]":
    times = {} if timings is None else timings
    tic = time.perf_counter()
    gt_data = load_ground_truth(gt)
    if not gt_data.has_annotations:
        raise YTVISFormatError(
            f"ground truth {gt_data.name!r} has no annotations (a hidden validation/test split?): it cannot be "
            "scored; submit the results to the benchmark server instead"
        )
    times["load_gt_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    preds = load_prediction_arrays(results, gt_data, times)
    times["load_results_s"] = time.perf_counter() - tic
    matches = _Matches(gt_data, preds, max_dets, times)
    times["pairs"], times["candidate_pairs"] = matches.num_pairs, matches.num_candidates
    video_ids = sorted(gt_data.videos)
    dets = [MAX_DETS[0], MAX_DETS[1], max_dets]
    tic = time.perf_counter()
    stats = _accumulate(matches, video_ids, None, gt_data.category_ids, dets)
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
            out[key] = (float(_accumulate(matches, video_ids, subset, gt_data.category_ids, dets)[0])
                        if subset else -1.0)
        valid = [out[k] for k in subsets if out[k] >= 0]
        out["AP_mean"] = float(np.mean(valid)) if len(valid) == len(subsets) else -1.0
    times["accumulate_s"] = time.perf_counter() - tic
    return out


def _accumulate(matches: _Matches, video_ids: List[int], subset: Optional[List[int]], category_ids: List[int],
                max_dets: List[int]) -> np.ndarray:
    """accumulate/summarize on the videos of ``subset`` (default: all); returns the 12 stats."""
    d_in = g_in = None
    ids = video_ids
    if subset is not None:
        member = np.zeros(len(video_ids), dtype=bool)
        member[np.searchsorted(np.array(video_ids), np.array(subset, dtype=np.int64))] = True
        d_in, g_in, ids = member[matches.d_vpos], member[matches.g_vpos], list(subset)
    g_k = matches.g_k if g_in is None else matches.g_k[g_in]
    counted = matches.g_counted if g_in is None else matches.g_counted[:, g_in]
    npig = np.stack([np.bincount(g_k[counted[a]], minlength=matches.num_k) for a in range(counted.shape[0])], axis=1)
    events = (matches.d_k, matches.d_vpos, matches.d_rank, matches.d_score, matches.fp_base, matches.tp_events,
              matches.fp_flips, npig)
    return _PrecomputedCOCOeval(ids, category_ids, max_dets, events=events, det_mask=d_in).run()


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

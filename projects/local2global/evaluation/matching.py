"""The official per-(video, category) matching (``computeIoU`` / ``evaluateVid``), for every prediction at once.

:class:`_Matches` builds every same-category (prediction, gt) pair of a video, prunes it by the IoU upper bound
(:func:`.track_iou.iou_upper_bound_prunes`), computes the exact IoUs of the remaining pairs (one
``pycocotools.mask.iou`` call per video), and matches: predictions with a single candidate gt in bulk
(:meth:`_Matches._match_single`), (video, category) pairs where gts compete by the official greedy loop
(:func:`_greedy_matches`). Its output (true-positive events, false-positive flips) is what
:func:`.accumulate.accumulate_events` consumes; :mod:`.ytvis` drives both.
"""

from __future__ import annotations

import itertools
import time
from typing import Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from .params import _IOU_THRS, _MAX_IOU_THR, AREA_RANGES
from .predictions import PredictionArrays
from .results_parse import rle_counts
from .track_iou import iou_upper_bound_prunes
from .ytvis_format import GroundTruth

#: log2 of the number of (pair, frame) entries processed at once by the IoU bound.
_CHUNK_BITS = 18


# ----------------------------------------------------------------------------------------------------------
# Exact pruning, IoU of the candidate pairs and greedy matching (the official computeIoU / evaluateVid)
# ----------------------------------------------------------------------------------------------------------
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


"""pycocotools' ``COCOeval.accumulate``, vectorised over categories, and the ``COCOeval`` subclass that uses it.

* :func:`accumulate_events` -- ``accumulate`` computed from the true-positive events and the false-positive
  running sums (with the proof that the arrays are bit-identical);
* :func:`dense_to_events`, :func:`eval_imgs_to_events` -- the same arguments from dense flags or from
  pycocotools-style ``evalImgs`` (tests);
* :class:`_PrecomputedCOCOeval` -- ``COCOeval`` with this ``accumulate``; ``summarize`` is pycocotools' own;
* :func:`_accumulate` -- the evaluator's call: the events of a :class:`.matching._Matches` on a video subset.

The events come from :class:`.matching._Matches`; :mod:`.ytvis` drives both and re-exports the public names.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import logging
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools.cocoeval import COCOeval

from .params import AREA_LABELS, AREA_RANGES

if TYPE_CHECKING:  # annotation only: the matching does not depend on this module, nor this one on it
    from .matching import _Matches

logger = logging.getLogger(__name__)

__all__ = ["accumulate_events", "dense_to_events", "eval_imgs_to_events"]


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

"""Video panoptic quality (VPQ) exactly as the official ``eval_vpq_vspw.py`` of ``VIPSeg-Dataset``, vectorised.

The official definition (commit ``92e1459``, after the parallel-VPQ fix ``9ee267e``), restated:

* for each window size ``n`` in 1, 2, 4, 6, 8 frames (reported as ``k = 5 (n - 1)`` = 0, 5, 15, 25, 35) and each
  window start ``s = 0 .. T - n`` of every video (videos shorter than ``n`` frames add nothing):

  - a ground-truth *tube* is an id listed in the JSON of at least one frame of the window; its category and
    ``iscrowd`` are those of its first JSON entry in the window; its area is the sum of its JSON ``area`` over
    the window's frames (ground-truth areas come from the JSON, never from the PNGs);
  - a predicted tube likewise (category of its first entry), with the area counted in its PNGs (frames where
    it is listed);
  - intersections count the window's pixels of each (gt id, pred id) pair, whether or not the ids are listed
    in that particular frame; ``void`` is pixel id 0 of the ground truth;
  - a pair with pixels in common, the gt tube not crowd, equal categories, is a true positive when
    ``IoU = I / (A_pred + A_gt - I - I(void, pred)) > 0.5`` (each such pair counts: no one-to-one step);
  - unmatched non-crowd gt tubes are false negatives; an unmatched predicted tube is a false positive unless
    more than half of it lies on void plus the crowd tube of its category (the last crowd tube of that
    category in insertion order: frame of first appearance in the window, then JSON position);

* per category (the ground-truth JSON's), summed over all windows of all videos: ``PQ = ΣIoU / (TP + FP/2 +
  FN/2)``, ``SQ = ΣIoU / TP`` (0 without TP), ``RQ = TP / (TP + FP/2 + FN/2)``; categories with no TP, FP or FN are
  left out; All / Things (``isthing == 1``) / Stuff (the others) are the means over the remaining ones, times 100;
* the final VPQ (all / things / stuff) is the mean of the five window sizes.

Undefined cases (the official script raises ``ZeroDivisionError``): a subset with no category left (e.g. no stuff
in the ground truth nor in the predictions, or every video shorter than the window) gives ``nan`` for that
window size (logged), and the final value is the mean over the window sizes that are defined (``nan`` if none).
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Sequence

import numpy as np

from .panoptic_io import VPSFormatError
from .video_tables import VideoTables

logger = logging.getLogger(__name__)

__all__ = ["VPQ_WINDOW_SIZES", "window_label", "VPQAccumulator", "vpq_summary", "IOU_THRESHOLD", "IGNORE_FRACTION"]

#: Window sizes (frames) of the official script.
VPQ_WINDOW_SIZES = (1, 2, 4, 6, 8)
#: The official reports window size n as k = (n - 1) * 5 (VIPSeg is annotated every 5th original frame).
_FRAME_STRIDE = 5
#: A pair is a true positive when its IoU is above this.
IOU_THRESHOLD = 0.5
#: An unmatched prediction is ignored when more than this fraction of it is void / crowd.
IGNORE_FRACTION = 0.5


def window_label(nframes: int) -> int:
    """The official ``k`` of a window of ``nframes`` frames."""
    return (nframes - 1) * _FRAME_STRIDE


def _window_sum(x: np.ndarray, n: int) -> np.ndarray:
    """``(T, N) -> (T - n + 1, N)`` sums over frames ``s .. s + n - 1`` (exact, integer prefix sums)."""
    c = np.zeros((x.shape[0] + 1,) + x.shape[1:], np.int64)
    np.cumsum(x, axis=0, out=c[1:])
    return c[n:] - c[:-n]


def _next_present(present: np.ndarray) -> np.ndarray:
    """``(T, N)``: the first frame ``>= t`` where the id is listed (``T`` if none)."""
    T = present.shape[0]
    idx = np.where(present, np.arange(T)[:, None], T)
    return np.minimum.accumulate(idx[::-1], axis=0)[::-1]


class VPQAccumulator:
    """Per-category TP / FP / FN / ΣIoU for each window size, accumulated video by video.

    Args:
        categories: the ground-truth JSON's ``categories`` (``id``, ``isthing``).
        window_sizes: frames per window (default the official five).
    """

    def __init__(self, categories: Sequence[dict], window_sizes: Sequence[int] = VPQ_WINDOW_SIZES):
        self.categories = {int(c["id"]): c for c in categories}  # official: later duplicates win
        self.cat_ids = np.array(sorted(self.categories), np.int64)
        self.window_sizes = tuple(window_sizes)
        shape = (len(self.window_sizes), len(self.cat_ids) + 1)  # last column: categories not in the list
        self.tp = np.zeros(shape, np.int64)
        self.fp = np.zeros(shape, np.int64)
        self.fn = np.zeros(shape, np.int64)
        self.iou = np.zeros(shape, np.float64)

    def _col(self, cats: np.ndarray) -> np.ndarray:
        col = np.searchsorted(self.cat_ids, cats)
        ok = (col < len(self.cat_ids)) & (self.cat_ids[np.minimum(col, len(self.cat_ids) - 1)] == cats)
        return np.where(ok, col, len(self.cat_ids))

    def check_pred_categories(self, tables: VideoTables) -> None:
        """Raise for a predicted category not in the ground-truth categories (the official ``KeyError``)."""
        cats = np.concatenate([tables.pred_cat_first[tables.pred_present], tables.pred_cat_last[tables.pred_present]])
        bad = np.setdiff1d(cats, self.cat_ids)
        if bad.size:
            raise VPSFormatError(f"video {tables.video_id!r}: predicted segments have unknown category_id(s) {bad.tolist()}")

    def add_video(self, tb: VideoTables) -> None:
        """Add every window of every size of one video."""
        T = tb.num_frames
        G, P = len(tb.gt_ids), len(tb.pred_ids)
        if tb.pair_count.size:
            key = tb.pair_gt * (P + 1) + tb.pair_pred
            pair_keys, inv = np.unique(key, return_inverse=True)
            per_frame = np.zeros((T, len(pair_keys)), np.int64)
            np.add.at(per_frame, (tb.pair_frame, inv), tb.pair_count)
        else:
            pair_keys, per_frame = np.zeros(0, np.int64), np.zeros((T, 0), np.int64)
        pg, pp = pair_keys // (P + 1), pair_keys % (P + 1)
        cand = np.nonzero((pg < G) & (pp < P))[0]
        void_pairs = np.nonzero(pg == tb.void_row)[0]
        g_next, p_next = _next_present(tb.gt_present), _next_present(tb.pred_present)
        for wi, n in enumerate(self.window_sizes):
            if T >= n:
                self._add_windows(wi, n, tb, per_frame, pg, pp, cand, void_pairs, g_next, p_next)

    def _add_windows(self, wi, n, tb, per_frame, pg, pp, cand, void_pairs, g_next, p_next) -> None:
        S = tb.num_frames - n + 1
        G, P = len(tb.gt_ids), len(tb.pred_ids)
        starts = np.arange(S)[:, None]
        gf, pf = g_next[:S], p_next[:S]  # first listed frame at or after each window start
        g_in, p_in = gf < starts + n, pf < starts + n
        gfc, pfc = np.minimum(gf, tb.num_frames - 1), np.minimum(pf, tb.num_frames - 1)
        g_cat = np.take_along_axis(tb.gt_cat_first, gfc, 0)
        g_crowd = np.take_along_axis(tb.gt_crowd_first, gfc, 0) & g_in
        p_cat = np.take_along_axis(tb.pred_cat_first, pfc, 0)
        g_area = _window_sum(tb.gt_area, n)
        p_area = _window_sum(tb.pred_area, n)
        inter = _window_sum(per_frame, n)  # (S, K)
        void = np.zeros((S, P + 1), np.int64)
        void[:, pp[void_pairs]] = inter[:, void_pairs]

        gk, pk = pg[cand], pp[cand]
        ik = inter[:, cand]
        valid = (ik > 0) & g_in[:, gk] & p_in[:, pk] & ~g_crowd[:, gk] & (g_cat[:, gk] == p_cat[:, pk])
        union = p_area[:, pk] + g_area[:, gk] - ik - void[:, pk]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = ik / union
        if (valid & ~(iou <= 1.0)).any():
            s, k = np.argwhere(valid & ~(iou <= 1.0))[0]
            raise VPSFormatError(
                f"video {tb.video_id!r}: invalid IoU {iou[s, k]} of gt id {tb.gt_ids[gk[k]]} and predicted id "
                f"{tb.pred_ids[pk[k]]} in the window of frames {s}..{s + n - 1} (the official script's assertion): "
                "the ground-truth JSON areas are smaller than the PNG segments"
            )
        tp = valid & (iou > IOU_THRESHOLD)
        s_idx, k_idx = np.nonzero(tp)
        cols = self._col(g_cat[s_idx, gk[k_idx]])
        np.add.at(self.tp[wi], cols, 1)
        np.add.at(self.iou[wi], cols, iou[s_idx, k_idx])
        g_matched = np.zeros((S, G), bool)
        p_matched = np.zeros((S, P), bool)
        g_matched[s_idx, gk[k_idx]] = True
        p_matched[s_idx, pk[k_idx]] = True

        fn = g_in & ~g_matched & ~g_crowd
        np.add.at(self.fn[wi], self._col(g_cat[fn]), 1)

        ignored = void[:, :P].copy()
        if g_crowd.any():
            ignored += self._crowd_overlap(tb, n, g_crowd, g_cat, gf, p_cat, p_in & ~p_matched, inter, pg, pp)
        fp = p_in & ~p_matched
        with np.errstate(divide="ignore", invalid="ignore"):
            fp &= ~(ignored / p_area > IGNORE_FRACTION)
        np.add.at(self.fp[wi], self._col(p_cat[fp]), 1)

    @staticmethod
    def _crowd_overlap(tb, n, g_crowd, g_cat, gf, p_cat, p_unmatched, inter, pg, pp) -> np.ndarray:
        """``(S, P)`` pixels of each unmatched prediction on the crowd tube of its category (rare: a loop)."""
        out = np.zeros(p_unmatched.shape, np.int64)
        pair_index = {(int(g), int(p)): k for k, (g, p) in enumerate(zip(pg, pp))}
        for s in np.nonzero(g_crowd.any(axis=1))[0]:
            crowd_of_cat: Dict[int, int] = {}
            rows = np.nonzero(g_crowd[s])[0]
            order = sorted(rows, key=lambda g: (gf[s, g], tb.gt_pos_first[gf[s, g], g]))
            for g in order:  # insertion order: the last crowd tube of a category wins
                crowd_of_cat[int(g_cat[s, g])] = int(g)
            for p in np.nonzero(p_unmatched[s])[0]:
                g = crowd_of_cat.get(int(p_cat[s, p]))
                if g is not None and (g, int(p)) in pair_index:
                    out[s, p] = inter[s, pair_index[(g, int(p))]]
        return out

    def results(self) -> List[dict]:
        """Per window size: ``{"k", "nframes", "All"|"Things"|"Stuff": {pq, sq, rq, n} (percent), "per_class"}``."""
        is_thing = np.array([self.categories[c].get("isthing") == 1 for c in self.cat_ids], bool)
        out = []
        for wi, n in enumerate(self.window_sizes):
            tp, fp, fn, iou = (a[wi, : len(self.cat_ids)] for a in (self.tp, self.fp, self.fn, self.iou))
            used = (tp + fp + fn) > 0
            denom = np.where(used, tp + 0.5 * fp + 0.5 * fn, 1.0)
            pq = np.where(used, iou / denom, 0.0)
            sq = np.where(tp > 0, iou / np.maximum(tp, 1), 0.0)
            rq = np.where(used, tp / denom, 0.0)
            entry = {"k": window_label(n), "nframes": n}
            for name, sel in (("All", np.ones_like(used)), ("Things", is_thing), ("Stuff", ~is_thing)):
                m = used & sel
                cnt = int(m.sum())
                if cnt == 0:
                    logger.warning("VPQ k=%d %s: no category with TP + FP + FN > 0 (undefined; the official "
                                   "script divides by zero): nan", window_label(n), name)
                    entry[name] = {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}
                else:
                    entry[name] = {"pq": float(100 * pq[m].sum() / cnt), "sq": float(100 * sq[m].sum() / cnt),
                                   "rq": float(100 * rq[m].sum() / cnt), "n": cnt}
            entry["per_class"] = {
                int(c): {"pq": float(pq[i]), "sq": float(sq[i]), "rq": float(rq[i]), "iou": float(iou[i]),
                         "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i])}
                for i, c in enumerate(self.cat_ids)
            }
            out.append(entry)
        return out


def vpq_summary(per_window: List[dict]) -> Dict[str, float]:
    """Final ``VPQ`` / ``VPQ_th`` / ``VPQ_st`` (percent): means over the window sizes (defined ones only)."""
    out = {}
    for key, name in (("VPQ", "All"), ("VPQ_th", "Things"), ("VPQ_st", "Stuff")):
        vals = [w[name]["pq"] for w in per_window if not math.isnan(w[name]["pq"])]
        if len(vals) != len(per_window):
            logger.warning("%s: averaged over the %d window sizes where it is defined", key, len(vals))
        out[key] = float(sum(vals) / len(vals)) if vals else math.nan
    return out

"""Segmentation and tracking quality (STQ) exactly as the official ``eval_stq_vspw.py`` + deeplab2's numpy STQ.

``eval_stq_vspw.py`` (``VIPSeg-Dataset`` commit ``92e1459``) encodes every frame for deeplab2's
``segmentation_and_tracking_quality.py`` (numpy; ``num_classes = 124``, ``ignore_label = 255``,
``label_bit_shift = 16``, ``offset = 2^24``), restated:

* ground truth: a pixel whose id is listed in the frame's JSON gets ``semantic = category_id`` (of the *last*
  entry of that id) and ``instance = rank of the id's first appearance in the video's JSON`` (0, 1, 2, ...);
  any other pixel gets semantic 255 and instance 255; prediction likewise with its own ranks; label =
  ``semantic << 16 | instance``; each video is one sequence;
* deeplab2: semantic 255 is mapped to index 124 (void); **instance 0 of a thing class is crowd**: with the
  0-based ranks above, the first-listed ground-truth segment of every video is crowd when its class is a
  thing (the JSON ``iscrowd`` flag is not read); crowd pixels are removed from both sides of the association
  term;
* AQ: for every ground-truth thing tube ``g`` (label value, over the whole video), ``(1/|g|) Σ_p TPA(p,g) ·
  TPA / (TPA + FPA + FNA)`` over predicted thing tubes ``p`` (any class); ``AQ`` = the sum over all tubes of all
  videos / the number of tubes (0 without tubes);
* SQ = mIoU of the semantic confusion matrix summed over videos, with the void *row* removed (void ground
  truth is ignored) but the void *column* kept: a labelled pixel predicted as void is a false negative of its
  class, and the void column's own union (all such pixels) counts as one more class of IoU 0 whenever it is
  non-empty; classes with an empty union are left out;
* ``STQ = sqrt(AQ · SQ)``; the same per video (``*_per_seq``).

Every statistic depends on a pixel only through its (gt id, pred id) pair in that frame, so this works on the
per-frame pair histograms of :mod:`.video_tables` (exact integers, as the official counts).

Undefined cases: SQ is ``nan`` when no ground-truth pixel of any frame is labelled (deeplab2 divides 0 by 0 and
returns ``nan`` too, with a RuntimeWarning), and then STQ is ``nan``.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Sequence

import numpy as np

from .panoptic_io import VPSFormatError
from .video_tables import VideoTables

logger = logging.getLogger(__name__)

__all__ = ["STQAccumulator", "STQ_NUM_CLASSES", "STQ_IGNORE_LABEL", "STQ_LABEL_BIT_SHIFT"]

#: ``eval_stq_vspw.py``'s constants.
STQ_NUM_CLASSES = 124
STQ_IGNORE_LABEL = 255
STQ_LABEL_BIT_SHIFT = 16
_INSTANCE_MASK = (1 << STQ_LABEL_BIT_SHIFT) - 1


class STQAccumulator:
    """Per-sequence AQ sums and semantic confusion, accumulated video by video.

    Args:
        categories: the ground-truth JSON's categories (things: truthy ``isthing``, as ``eval_stq_vspw.py``).
        num_classes: confusion-matrix classes (default 124, the official constant; raised to cover larger
            category ids of other datasets, which give the same numbers since empty classes are left out).
    """

    def __init__(self, categories: Sequence[dict], num_classes: int = STQ_NUM_CLASSES):
        ids = [int(c["id"]) for c in categories]
        if ids and max(ids) >= STQ_IGNORE_LABEL:
            raise VPSFormatError(f"STQ: category ids must be < {STQ_IGNORE_LABEL} (the ignore label), got {max(ids)}")
        self.num_classes = max([num_classes] + [i + 1 for i in ids])
        self.things = np.array(sorted({int(c["id"]) for c in categories if c.get("isthing")}), np.int64)
        self.total_confusion = np.zeros((self.num_classes + 1, self.num_classes + 1), np.int64)
        self.aq_sum: List[float] = []
        self.num_tubes: List[int] = []
        self.iou_per_seq: List[float] = []
        self.ids: List[str] = []
        self.lengths: List[int] = []

    def _sem_index(self, sem: np.ndarray, video_id: str) -> np.ndarray:
        idx = np.where(sem == STQ_IGNORE_LABEL, self.num_classes, sem)
        bad = (idx < 0) | (idx > self.num_classes)
        if bad.any():
            raise VPSFormatError(
                f"video {video_id!r}: category id(s) {np.unique(sem[bad]).tolist()} are outside "
                f"[0, {self.num_classes}] and not {STQ_IGNORE_LABEL}: the official STQ cannot index them"
            )
        return idx

    def add_video(self, tb: VideoTables) -> None:
        """Add one video as one sequence."""
        G, P = len(tb.gt_ids), len(tb.pred_ids)
        if max(G, P) > _INSTANCE_MASK:
            raise VPSFormatError(f"video {tb.video_id!r}: more than {_INSTANCE_MASK} segment ids; the STQ "
                                 f"encoding (instance in {STQ_LABEL_BIT_SHIFT} bits) would overflow")
        t, g, p, c = tb.pair_frame, tb.pair_gt, tb.pair_pred, tb.pair_count
        g_listed = np.zeros(len(g), bool)
        real_g = g < G
        g_listed[real_g] = tb.gt_present[t[real_g], g[real_g]]
        p_listed = np.zeros(len(p), bool)
        real_p = p < P
        p_listed[real_p] = tb.pred_present[t[real_p], p[real_p]]
        g_sem = np.full(len(g), STQ_IGNORE_LABEL, np.int64)
        g_ins = np.full(len(g), STQ_IGNORE_LABEL, np.int64)
        g_sem[g_listed] = tb.gt_cat_last[t[g_listed], g[g_listed]]
        g_ins[g_listed] = tb.gt_order[g[g_listed]]
        p_sem = np.full(len(p), STQ_IGNORE_LABEL, np.int64)
        p_ins = np.full(len(p), STQ_IGNORE_LABEL, np.int64)
        p_sem[p_listed] = tb.pred_cat_last[t[p_listed], p[p_listed]]
        p_ins[p_listed] = tb.pred_order[p[p_listed]]

        conf = np.zeros_like(self.total_confusion)
        np.add.at(conf, (self._sem_index(g_sem, tb.video_id), self._sem_index(p_sem, tb.video_id)), c)
        conf[self.num_classes, :] = 0  # void ground truth is ignored (deeplab2's removal matrix)
        self.total_confusion += conf
        self.iou_per_seq.append(_mean_iou(conf))

        y_true = (g_sem << STQ_LABEL_BIT_SHIFT) + g_ins
        y_pred = (p_sem << STQ_LABEL_BIT_SHIFT) + p_ins
        g_thing = np.isin(g_sem, self.things)
        p_thing = np.isin(p_sem, self.things)
        crowd = g_thing & ((g_ins & _INSTANCE_MASK) == 0)
        lm, pm = g_thing & ~crowd, p_thing & ~crowd
        gt_keys, gt_size = _sum_by_key(y_true[lm], c[lm])
        pr_keys, pr_size = _sum_by_key(y_pred[pm], c[pm])
        both = lm & pm
        pair_key = y_true[both] * (1 << 32) + y_pred[both]
        ik, tpa = _sum_by_key(pair_key, c[both])
        gi = np.searchsorted(gt_keys, ik >> 32)
        pi = np.searchsorted(pr_keys, ik & 0xFFFFFFFF)
        gs, ps = gt_size[gi].astype(np.float64), pr_size[pi].astype(np.float64)
        tpa = tpa.astype(np.float64)
        contrib = tpa * (tpa / (ps + gs - tpa)) / gs
        self.aq_sum.append(float(contrib.sum()))
        self.num_tubes.append(len(gt_keys))
        self.ids.append(tb.video_id)
        self.lengths.append(tb.num_frames)

    def result(self) -> Dict[str, object]:
        """``STQ``, ``AQ``, ``IoU`` (= SQ) as fractions, plus the per-sequence lists (deeplab2's keys)."""
        eps = 1e-15  # deeplab2's _EPSILON
        aq = float(np.sum(self.aq_sum) / max(float(np.sum(self.num_tubes)), eps))
        iou = _mean_iou(self.total_confusion)
        if math.isnan(iou):
            logger.warning("STQ: no labelled ground-truth pixel: SQ (mIoU) and STQ are undefined (nan)")
        aq_seq = np.asarray(self.aq_sum, np.float64) / np.maximum(np.asarray(self.num_tubes, np.float64), eps)
        iou_seq = np.asarray(self.iou_per_seq, np.float64)
        return {
            "STQ": float(np.sqrt(aq * iou)), "AQ": aq, "IoU": iou,
            "STQ_per_seq": np.sqrt(aq_seq * iou_seq).tolist(), "AQ_per_seq": aq_seq.tolist(),
            "IoU_per_seq": iou_seq.tolist(), "ID_per_seq": list(self.ids), "Length_per_seq": list(self.lengths),
        }


def _sum_by_key(keys: np.ndarray, counts: np.ndarray):
    """Sorted unique keys and the summed counts of each."""
    u, inv = np.unique(keys, return_inverse=True)
    return u, np.bincount(inv.ravel(), weights=counts, minlength=len(u)).astype(np.int64)


def _mean_iou(conf: np.ndarray) -> float:
    """deeplab2's mIoU of a confusion matrix (rows gt, columns prediction): classes with a non-empty union."""
    inter = np.diagonal(conf).astype(np.float64)
    union = conf.sum(axis=0) + conf.sum(axis=1) - np.diagonal(conf)
    n = int(np.count_nonzero(union))
    if n == 0:
        return math.nan
    return float(np.sum(inter / np.maximum(union, 1e-15)) / n)

"""One pass over a video's PNG pairs: the per-frame tables both VPQ and STQ are computed from.

Every statistic of the official VPQ and STQ is a function of, per frame, the number of pixels of each
(ground-truth id, predicted id) pair together with the frames' JSON ``segments_info``: the official scripts
paint and count per pixel, but all pixels of one pair get the same values. So each PNG pair is read once and
reduced to its pair histogram (the official VPQ re-reads every frame once per window containing it: about
21 times per frame for windows of 1, 2, 4, 6, 8 frames).

Ids are indexed per video: ``gt_ids`` = every id listed in any frame's ground-truth JSON (sorted), then two
extra rows, ``VOID`` (pixel id 0 when 0 is not a listed id) and ``UNLISTED`` (pixel ids listed in no frame:
they are neither segments nor void for VPQ, void for STQ); ``pred_ids`` = every id listed in any predicted
frame, then one extra column for pixel id 0 when 0 is not listed. Whether an id is a segment *in frame t* is
``gt_present[t]`` / ``pred_present[t]`` (listed in that frame's JSON).

The histogram uses a lookup table from 24-bit id to index (32 MiB of int16, allocated once per process): on a
720p frame it took 22 ms against 87 ms for ``np.unique`` of the pair keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from .panoptic_io import MAX_RGB_ID, FrameSegments, VPSFormatError

__all__ = ["VideoTables", "build_video_tables", "frame_pair_histogram"]

_LUTS = {}
_LUT_NONE = -1


def _index_map(img: np.ndarray, ids: np.ndarray, zero_index: int) -> np.ndarray:
    """``(H, W)`` index of each pixel's id in the sorted ``ids`` (``zero_index`` for an unlisted 0, else -1).

    A lookup table over all 2^24 ids (int16, 32 MiB, allocated once per process; int32 for more than 32k ids)
    is filled with the video's ids, gathered and cleared again.
    """
    dtype = np.int16 if max(len(ids), zero_index) < np.iinfo(np.int16).max else np.int32
    lut = _LUTS.get(dtype)
    if lut is None:
        lut = _LUTS[dtype] = np.full(MAX_RGB_ID + 1, _LUT_NONE, dtype)
    try:
        lut[0] = zero_index
        lut[ids] = np.arange(len(ids), dtype=dtype)
        return lut[img]
    finally:
        lut[ids] = _LUT_NONE
        lut[0] = _LUT_NONE


@dataclass
class VideoTables:
    """Per-frame tables of one video (T frames, G listed gt ids + 2 extra rows, P listed pred ids + 1).

    Attributes:
        video_id: the video name.
        gt_ids: ``(G,)`` listed ground-truth ids; rows ``G`` (void) and ``G + 1`` (unlisted) follow.
        void_row: the row of pixel id 0 (``G``, or the row of id 0 when it is listed).
        gt_present: ``(T, G)`` listed in frame t. ``gt_area``: ``(T, G)`` JSON area (duplicates summed).
        gt_cat_first / gt_crowd_first / gt_pos_first: ``(T, G)`` category, iscrowd and JSON position of the first
            entry of the id in frame t (what the official VPQ keeps); ``gt_cat_last``: the last entry's category
            (what the official STQ paints). ``gt_order``: ``(G,)`` rank of first appearance over the video.
        pred_ids: ``(P,)``; column ``P`` is pixel id 0 when 0 is not listed. ``zero_col``: the column of id 0.
        pred_present / pred_area (PNG pixels, 0 where not listed) / pred_cat_first / pred_cat_last: ``(T, P)``;
            ``pred_order``: ``(P,)``.
        pair_frame, pair_gt, pair_pred, pair_count: the non-zero pair histogram entries of all frames.
        gt_png_area: ``(T, G)`` PNG pixels of each listed gt id (to report JSON areas that differ).
    """

    video_id: str
    gt_ids: np.ndarray
    void_row: int
    gt_present: np.ndarray
    gt_area: np.ndarray
    gt_cat_first: np.ndarray
    gt_crowd_first: np.ndarray
    gt_pos_first: np.ndarray
    gt_cat_last: np.ndarray
    gt_order: np.ndarray
    pred_ids: np.ndarray
    zero_col: int
    pred_present: np.ndarray
    pred_area: np.ndarray
    pred_cat_first: np.ndarray
    pred_cat_last: np.ndarray
    pred_order: np.ndarray
    pair_frame: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_count: np.ndarray
    gt_png_area: np.ndarray

    @property
    def num_frames(self) -> int:
        return self.gt_present.shape[0]


def _frame_fields(frames: List[FrameSegments], ids: np.ndarray):
    """Per-frame (T, N) present / summed area / first & last category / first crowd / first position."""
    t_n = (len(frames), len(ids))
    present = np.zeros(t_n, bool)
    area = np.zeros(t_n, np.int64)
    cat_first = np.zeros(t_n, np.int64)
    cat_last = np.zeros(t_n, np.int64)
    crowd_first = np.zeros(t_n, bool)
    pos_first = np.zeros(t_n, np.int64)
    for t, f in enumerate(frames):
        if not len(f.ids):
            continue
        col = np.searchsorted(ids, f.ids)
        rev = np.arange(len(col))[::-1]
        first = np.unique(col, return_index=True)[1]
        last_rev = np.unique(col[::-1], return_index=True)[1]
        last = rev[last_rev]
        present[t, col] = True
        np.add.at(area[t], col, np.maximum(f.area, 0))
        cat_first[t, col[first]] = f.category_ids[first]
        crowd_first[t, col[first]] = f.iscrowd[first] == 1
        pos_first[t, col[first]] = first
        cat_last[t, col[last]] = f.category_ids[last]
    return present, area, cat_first, cat_last, crowd_first, pos_first


def _first_appearance_rank(frames: List[FrameSegments], ids: np.ndarray) -> np.ndarray:
    """Rank of each id by first appearance over the video's JSON (frame order, then JSON order)."""
    order = np.concatenate([f.ids for f in frames]) if frames else np.zeros(0, np.int64)
    _, first = np.unique(order, return_index=True)  # unique ids sorted == ids
    rank = np.empty(len(ids), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(ids))
    return rank


def frame_pair_histogram(gt: np.ndarray, pred: np.ndarray, gt_ids: np.ndarray, void_row: int,
                         pred_ids: np.ndarray, zero_col: int, where: str) -> np.ndarray:
    """``(G + 2, P + 1)`` pixel counts of (gt row, pred column) pairs of one frame.

    Args:
        gt, pred: ``(H, W)`` uint32 id maps. gt_ids / pred_ids: the video's listed ids (sorted).
        void_row, zero_col: where pixel id 0 goes. where: names the files, for errors.

    Raises:
        VPSFormatError: a predicted pixel id listed in no predicted frame of the video.
    """
    g, p = len(gt_ids), len(pred_ids)
    gi = _index_map(gt, gt_ids, void_row).astype(np.int64)
    gi[gi == _LUT_NONE] = g + 1
    pi = _index_map(pred, pred_ids, zero_col)
    if (pi == _LUT_NONE).any():
        bad = np.unique(pred[pi == _LUT_NONE])
        raise VPSFormatError(f"{where}: predicted segment id(s) {bad[:10].tolist()} are in the PNG but not in the JSON")
    key = gi.ravel() * (p + 1) + pi.ravel()
    return np.bincount(key, minlength=(g + 2) * (p + 1)).reshape(g + 2, p + 1)


def build_video_tables(video_id: str, gt_frames: List[FrameSegments], pred_frames: List[FrameSegments],
                       read_gt, read_pred, gt_names: List[str], pred_names: List[str]) -> VideoTables:
    """Read every frame pair once and build the video's tables.

    Args:
        video_id: the video name. gt_frames / pred_frames: per-frame JSON segments (same length T).
        read_gt / read_pred: ``t -> (H, W) uint32`` id map readers. gt_names / pred_names: file names, for errors.

    Raises:
        VPSFormatError: naming the video and the files: PNG sizes that differ, a predicted id in the PNG and not
            in the frame's JSON, or in the JSON and not in the PNG (the official VPQ's checks).
    """
    gt_ids = np.unique(np.concatenate([f.ids for f in gt_frames])) if gt_frames else np.zeros(0, np.int64)
    pred_ids = np.unique(np.concatenate([f.ids for f in pred_frames])) if pred_frames else np.zeros(0, np.int64)
    g, p = len(gt_ids), len(pred_ids)
    void_row = int(np.searchsorted(gt_ids, 0)) if g and gt_ids[0] == 0 else g
    zero_col = 0 if p and pred_ids[0] == 0 else p
    gt_present, gt_area, gt_cat_first, gt_cat_last, gt_crowd_first, gt_pos_first = _frame_fields(gt_frames, gt_ids)
    pred_present, _, pred_cat_first, pred_cat_last, _, _ = _frame_fields(pred_frames, pred_ids)
    T = len(gt_frames)
    pred_area = np.zeros((T, p), np.int64)
    gt_png_area = np.zeros((T, g), np.int64)
    frames_l, gts_l, preds_l, counts_l = [], [], [], []
    for t in range(T):
        where = f"video {video_id!r}, frame {t} (gt {gt_names[t]!r}, prediction {pred_names[t]!r})"
        gt_map, pred_map = read_gt(t), read_pred(t)
        if gt_map.shape != pred_map.shape:
            raise VPSFormatError(f"{where}: prediction PNG is {pred_map.shape}, ground truth {gt_map.shape}")
        hist = frame_pair_histogram(gt_map, pred_map, gt_ids, void_row, pred_ids, zero_col, where)
        col_sum = hist.sum(axis=0)
        listed = pred_present[t]
        unlisted_here = (col_sum[:p] > 0) & ~listed
        if zero_col < p:
            unlisted_here[zero_col] = False  # id 0 unlisted in this frame is simply not a segment
        if unlisted_here.any():
            raise VPSFormatError(
                f"{where}: predicted segment id(s) {pred_ids[unlisted_here][:10].tolist()} are in the PNG "
                "but not in this frame's JSON"
            )
        missing = listed & (col_sum[:p] == 0)
        if missing.any():
            raise VPSFormatError(
                f"{where}: predicted segment id(s) {pred_ids[missing][:10].tolist()} are in the JSON but not in the PNG"
            )
        pred_area[t] = np.where(listed, col_sum[:p], 0)
        gt_png_area[t] = hist[:g].sum(axis=1)
        rows, cols = np.nonzero(hist)
        frames_l.append(np.full(len(rows), t, np.int64))
        gts_l.append(rows)
        preds_l.append(cols)
        counts_l.append(hist[rows, cols])
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return VideoTables(
        video_id, gt_ids, void_row, gt_present, gt_area, gt_cat_first, gt_crowd_first, gt_pos_first, gt_cat_last,
        _first_appearance_rank(gt_frames, gt_ids), pred_ids, zero_col, pred_present, pred_area, pred_cat_first,
        pred_cat_last, _first_appearance_rank(pred_frames, pred_ids), cat(frames_l), cat(gts_l), cat(preds_l),
        cat(counts_l), gt_png_area,
    )

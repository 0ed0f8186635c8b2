"""Loading and validating a results file as flat arrays (:func:`load_prediction_arrays`).

Results files are read by :func:`load_prediction_arrays` as flat arrays: a local file is first parsed as a
skeleton (:func:`.results_parse.parse_results_skeleton`: the RLE objects cut out by a regex pass, kept as bytes,
the rest parsed by orjson) and validated in bulk (:func:`_bulk_prediction_arrays`); anything irregular falls back
to orjson / json and then to the original per-prediction validator (:func:`_detailed_prediction_arrays`), which
produces the error messages. Accepted inputs, values and messages are the same on every path (tested).

The records, JSON loading and the segmentation converter are in :mod:`.ytvis_format`; :mod:`.results_io`
re-exports the public names.
"""

from __future__ import annotations

import math
import operator
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, compress, repeat
from typing import Any, List, Optional, Tuple

import numpy as np

from .results_parse import FrameRLEs, ResultsSkeleton, parse_results_skeleton
from .ytvis_format import (
    _DICT_TYPE_ID,
    _NONE_TYPE_ID,
    _STR_TYPE_ID,
    _TRUE_ID,
    GroundTruth,
    JsonSource,
    Track,
    YTVISFormatError,
    _is_number,
    _type_ids,
    batched_area,
    load_json,
    load_json_fast,
    to_compressed_rle,
)

__all__ = ["PREDICTION_KEYS", "PredictionArrays", "load_prediction_arrays", "load_predictions"]

#: Keys every prediction of a results file must have.
PREDICTION_KEYS = ("video_id", "category_id", "score", "segmentations")


@dataclass
class PredictionArrays:
    """A parsed, validated results file as flat arrays (what the fast evaluator consumes).

    ``N`` predictions in file order (prediction ``i`` has the official id ``i + 1``), ``F = sum(length)`` frames.

    Attributes:
        name: the file name (or ``<in-memory results>``).
        video_id, category_id: ``(N,)`` int64 dataset ids.
        score: ``(N,)`` float64.
        length: ``(N,)`` int64 number of frames (the video's length); ``start``: ``(N,)`` offset of the first
            frame of each prediction in the frame arrays.
        frame_area: ``(F,)`` int64 pixel area of each frame's mask (0 where absent).
        frame_rle: ``(F,)`` int64 index into ``rles`` (-1 where the frame has no mask).
        rles: the compressed RLE dicts of the present frames, in frame order.
        avg_area: ``(N,)`` float64 official average area (mean of the non-zero frame areas, 0 if none).
        total_area: ``(N,)`` int64 sum of the frame areas.
    """

    name: str
    video_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    length: np.ndarray
    start: np.ndarray
    frame_area: np.ndarray
    frame_rle: np.ndarray
    rles: List[dict]
    avg_area: np.ndarray
    total_area: np.ndarray

    def __len__(self) -> int:
        return int(self.video_id.size)


def load_prediction_arrays(results: JsonSource, gt: GroundTruth, timings: Optional[dict] = None) -> PredictionArrays:
    """Parse and validate a results file (path or list) against a parsed ground truth, as flat arrays.

    The common case (a list of well-formed predictions whose frames are ``None`` or compressed RLE dicts of
    the video's size) is validated in bulk: one pass of C-level ``map``/``set`` operations per field instead of
    Python code per frame. Frames in another encoding (polygons, uncompressed RLE, falsy values) are converted
    one by one; any other irregularity re-runs the per-prediction validator of the original implementation
    on ``json``-parsed data, which raises the error naming the file, the video id and the prediction.

    Raises:
        YTVISFormatError: naming the file and video id for: a non-list file, missing keys, a video id that
            is not in the ground truth (a prediction file from another dataset), an unknown category id,
            a non-finite score, a segmentation list whose length differs from the video's, or a mask whose
            size differs from the video's.
    """
    if isinstance(results, (str, os.PathLike)):
        skeleton = parse_results_skeleton(os.fspath(results), timings)
        if skeleton is not None:
            try:
                if isinstance(skeleton.data, list):
                    arrays = _bulk_prediction_arrays(skeleton.data, os.fspath(results), gt, skeleton=skeleton)
                    if arrays is not None:
                        return arrays
            except YTVISFormatError:
                pass  # reported from the json parse below, with json's values
            del skeleton
    data, name, used_orjson = load_json_fast(results, "results")
    try:
        if not isinstance(data, list):
            raise YTVISFormatError(
                f"results {name!r}: expected a JSON list of predictions, got {type(data).__name__}"
            )
        arrays = _bulk_prediction_arrays(data, name, gt)
        if arrays is not None:
            return arrays
    except YTVISFormatError:
        if not used_orjson:
            raise
    if used_orjson:  # the reference parse for the detailed validator: exactly json's values and messages
        del data
        data, name = load_json(results, "results")
        if not isinstance(data, list):
            raise YTVISFormatError(
                f"results {name!r}: expected a JSON list of predictions, got {type(data).__name__}"
            )
    return _detailed_prediction_arrays(data, name, gt)


def load_predictions(results: JsonSource, gt: GroundTruth) -> List[Track]:
    """Parse and validate a results file (path or list) against a parsed ground truth, one :class:`Track` each.

    Returns:
        One :class:`Track` per prediction in file order; ``id`` is the 1-based file position.

    Raises:
        YTVISFormatError: as :func:`load_prediction_arrays`.
    """
    arr = load_prediction_arrays(results, gt)
    tracks = []
    for i in range(len(arr)):
        s0, n = int(arr.start[i]), int(arr.length[i])
        rles = [arr.rles[j] if j >= 0 else None for j in arr.frame_rle[s0:s0 + n].tolist()]  # dicts
        tracks.append(Track(i + 1, int(arr.video_id[i]), int(arr.category_id[i]), float(arr.score[i]), 0, rles,
                            arr.frame_area[s0:s0 + n], float(arr.avg_area[i])))
    return tracks


def _bulk_prediction_arrays(data: List[Any], name: str, gt: GroundTruth,
                            skeleton: Optional[ResultsSkeleton] = None) -> Optional[PredictionArrays]:
    """The bulk validator; ``None`` when anything needs the detailed, per-prediction one (it then raises).

    Every check below is the per-prediction rule of :func:`_detailed_prediction_arrays` applied to all
    predictions at once (``set`` inclusion for ids, ``type`` sets, vectorised lengths / sizes), so a file
    that passes gives exactly the arrays the detailed validator gives.

    Args:
        skeleton: when ``data`` is a skeleton from :func:`parse_results_skeleton`, the cuts to put back: the k-th
            ``True`` (a segmentation-list element, or the ``counts`` of an RLE dict) gets the k-th cut; ``None``
            is returned if they do not pair up. Dicts filled in belong to the skeleton just parsed (no input
            is modified); RLE dicts rebuilt from whole cut objects share one ``size`` list per video size.
    """
    n = len(data)
    if n == 0:
        return _assemble(name, [], [], np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), [])
    whole = skeleton is not None and skeleton.whole_objects
    try:
        if set(map(type, data)) != {dict}:
            return None
        vids = list(map(operator.itemgetter("video_id"), data))
        cats = list(map(operator.itemgetter("category_id"), data))
        scores = list(map(operator.itemgetter("score"), data))
        segl = list(map(operator.itemgetter("segmentations"), data))
        if not (set(vids) <= gt.videos.keys() and set(cats) <= set(gt.category_ids)):
            return None
        if not set(map(type, scores)) <= {int, float} or set(map(type, segl)) != {list}:
            return None
        score = np.array(scores, dtype=np.float64)
        if not np.isfinite(score).all():
            return None
        lengths = np.fromiter(map(len, segl), dtype=np.int64, count=n)
        video_len = {v: info.length for v, info in gt.videos.items()}
        if not np.array_equal(lengths, np.fromiter(map(video_len.__getitem__, vids), dtype=np.int64, count=n)):
            return None
        size_key = {v: (info.height, info.width) for v, info in gt.videos.items()}
        distinct = sorted(set(size_key.values()))
        key_index = {k: j for j, k in enumerate(distinct)}
        pred_size = np.fromiter((key_index[size_key[v]] for v in vids), dtype=np.int64, count=n)
        flat = list(chain.from_iterable(segl))
        # (frame arrays stay small: fresh memory is slow to touch on some machines)
        frame_size = np.repeat(pred_size.astype(np.int16 if len(distinct) < 1 << 15 else np.int64), lengths)
        if whole:
            marker = np.fromiter(map(operator.is_, flat, repeat(True)), dtype=bool, count=len(flat))
            if not _cut_sizes_match(skeleton, frame_size[marker], distinct):
                return None
            absent = np.fromiter(map(operator.is_, flat, repeat(None)), dtype=bool, count=len(flat))
            check = np.flatnonzero(~(marker | absent))  # frames still to look at (usually none)
            objs = [flat[i] for i in check.tolist()]
        else:
            marker = np.zeros(len(flat), dtype=bool)
            check, objs = None, flat
        tid = _type_ids(objs)
        is_dict = tid == _DICT_TYPE_ID
        dicts = list(compress(objs, is_dict.tolist()))
        values = list(map(dict.get, dicts, repeat("counts")))
        ok = _type_ids(values) == _STR_TYPE_ID
        if skeleton is not None and not whole:
            in_dict = np.fromiter(map(id, values), dtype=np.int64, count=len(values)) == _TRUE_ID
            if int(np.count_nonzero(in_dict)) != len(skeleton.counts):
                return None
            deque(map(dict.__setitem__, compress(dicts, in_dict.tolist()), repeat("counts"), skeleton.counts),
                  maxlen=0)
            ok[in_dict] = True
        # the size of every RLE dict against its video's, one pass per distinct video size
        sizes = list(map(dict.get, dicts, repeat("size")))
        dict_size = (frame_size if check is None else frame_size[check])[is_dict]
        for j, (h, w) in enumerate(distinct):
            sel = dict_size == j if len(distinct) > 1 else None
            subset = sizes if sel is None else list(compress(sizes, sel.tolist()))
            same = np.fromiter(map(operator.eq, subset, repeat([h, w])), dtype=bool, count=len(subset))
            if sel is None:
                ok &= same
            else:
                ok[sel] &= same
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    # frame -> RLE: whole cut objects, regular dicts, then per-frame conversions of everything else
    good = is_dict.copy()
    good[is_dict] = ok  # over the checked objects
    present = marker.copy()
    if check is None:
        present |= good
        slow = np.flatnonzero(~good & (tid != _NONE_TYPE_ID))
    else:
        present[check] = good
        slow = check[~good]
    known = (marker, skeleton.areas) if whole else None  # areas measured while cutting
    if whole and check.size == 0:
        # the common case: every present frame is a cut RLE object
        rles = FrameRLEs(skeleton.rles, np.arange(len(skeleton.rles)), {})
    else:
        objs = list(flat)
        if slow.size:
            # other encodings (polygons, uncompressed RLE, falsy values) and irregular dicts: the per-frame
            # converter, in file order (so the first malformed frame of the file is the one reported)
            starts = np.cumsum(lengths) - lengths
            pred_of = np.repeat(np.arange(n), lengths)
            for f in slow.tolist():
                i = int(pred_of[f])
                where = f"results {name!r}, video_id {vids[i]}, prediction {i}, frame {f - int(starts[i])}"
                rle = to_compressed_rle(objs[f], gt.videos[vids[i]], where)
                objs[f] = rle
                present[f] = rle is not None
        if whole:
            # frame order: cut objects at the markers, the others' own dicts
            cut_index = np.full(len(flat), -1, dtype=np.int64)
            cut_index[marker] = np.arange(int(np.count_nonzero(marker)))
            cut_index = cut_index[present]
            others = {j: objs[f] for j, f in zip(np.flatnonzero(cut_index < 0).tolist(),
                                                 np.flatnonzero(present & ~marker).tolist())}
            rles = FrameRLEs(skeleton.rles, cut_index, others)
        else:
            rles = list(compress(objs, present.tolist()))
    return _assemble(name, vids, cats, score, lengths, present, rles, known)


def _cut_sizes_match(skeleton: ResultsSkeleton, expected: np.ndarray, distinct: List[Tuple[int, int]]) -> bool:
    """Whether the k-th cut RLE object has the size of the video of the k-th marker, for every k.

    Args:
        expected: ``(C,)`` index into ``distinct`` (the video sizes) of each marker's video, in document order.
    """
    if expected.size != len(skeleton.rles):
        return False
    cut_sizes = np.array(skeleton.sizes, dtype=np.int64).reshape(-1, 2)[skeleton.size_index]
    return bool(np.array_equal(cut_sizes, np.array(distinct, dtype=np.int64).reshape(-1, 2)[expected]))


def _detailed_prediction_arrays(data: List[Any], name: str, gt: GroundTruth) -> PredictionArrays:
    """The per-prediction validator (raises at the first malformed prediction, in file order)."""
    category_ids = set(gt.category_ids)
    vids, cats, scores, lengths, present, rles = [], [], [], [], [], []
    for i, pred in enumerate(data):
        if not isinstance(pred, dict):
            raise YTVISFormatError(f"results {name!r}: entry {i} is not an object")
        vid = pred.get("video_id")
        where = f"results {name!r}, video_id {vid}, prediction {i}"
        missing = [k for k in PREDICTION_KEYS if k not in pred]
        if missing:
            raise YTVISFormatError(f"{where}: missing key(s) {missing}")
        if vid not in gt.videos:
            raise YTVISFormatError(
                f"{where}: video_id is not in the ground truth {gt.name!r} "
                "(is this a prediction file from another dataset or split?)"
            )
        if pred["category_id"] not in category_ids:
            raise YTVISFormatError(f"{where}: unknown category_id {pred['category_id']!r}")
        score = pred["score"]
        if not _is_number(score) or not math.isfinite(score):
            raise YTVISFormatError(f"{where}: 'score' must be a finite number, got {score!r}")
        video = gt.videos[vid]
        segs = pred["segmentations"]
        if not isinstance(segs, list) or len(segs) != video.length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise YTVISFormatError(f"{where}: 'segmentations' has {n} entries, the video has {video.length} frames")
        size = [video.height, video.width]
        for t, s in enumerate(segs):
            # fast path for the results format (compressed RLE of the right size); everything else is checked
            if not (type(s) is dict and type(s.get("counts")) is str and s.get("size") == size):
                s = to_compressed_rle(s, video, f"{where}, frame {t}")
            present.append(s is not None)
            if s is not None:
                rles.append(s)
        vids.append(vid)
        cats.append(pred["category_id"])
        scores.append(float(score))
        lengths.append(len(segs))
    return _assemble(name, vids, cats, np.array(scores, dtype=np.float64), np.array(lengths, dtype=np.int64),
                     np.array(present, dtype=bool), rles)


def _assemble(name: str, vids: Sequence[Any], cats: Sequence[Any], score: np.ndarray, lengths: np.ndarray,
              present: np.ndarray, rles: Sequence[dict], known: Optional[Tuple[np.ndarray, np.ndarray]] = None
              ) -> PredictionArrays:
    """Frame areas (batched pycocotools ``area`` over every RLE of the file) and the per-prediction sums.

    ``known``: ``(frames (F,) bool, their areas)`` already measured, e.g. while cutting the skeleton.

    ``avg_area`` follows the official ``loadRes``: the mean of the truthy areas of its own masks (uint32
    areas, float64 mean); 0 when every frame is null or empty. Sums of integers are exact in int64 and in
    float64, so ``sum / count`` equals numpy's mean bit for bit.
    """
    n = len(vids)
    lengths = np.asarray(lengths, dtype=np.int64)
    frame_area = np.zeros(present.size, dtype=np.int64)
    frame_rle = np.cumsum(present, dtype=np.int64)
    frame_rle -= 1
    frame_rle[~present] = -1  # frame -> index into rles
    if known is None:
        frame_area[present] = batched_area(rles)
    else:
        known_frames, known_areas = known
        frame_area[known_frames] = known_areas
        todo = present & ~known_frames
        if todo.any():
            frame_area[todo] = batched_area([rles[j] for j in frame_rle[todo].tolist()])
    starts = np.cumsum(lengths) - lengths
    total = np.zeros(n, dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    if frame_area.size:
        nonempty = lengths > 0  # reduceat of an empty segment returns the next element
        total[nonempty] = np.add.reduceat(frame_area, starts[nonempty])
        count[nonempty] = np.add.reduceat(frame_area > 0, starts[nonempty], dtype=np.int64)
    avg = np.divide(total.astype(np.float64), count, out=np.zeros(n), where=count > 0)
    return PredictionArrays(
        name=name,
        video_id=np.array([int(v) for v in vids], dtype=np.int64),
        category_id=np.array([int(c) for c in cats], dtype=np.int64),
        score=np.asarray(score, dtype=np.float64),
        length=lengths,
        start=starts,
        frame_area=frame_area,
        frame_rle=frame_rle,
        rles=rles,
        avg_area=avg,
        total_area=total,
    )


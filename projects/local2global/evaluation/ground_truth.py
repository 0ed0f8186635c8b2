"""Loading and validating a YouTube-VIS / OVIS ground-truth JSON (:func:`load_ground_truth`).

The annotations are validated in bulk (:func:`_bulk_gt_tracks`: C-level ``map`` / ``set`` passes and one batched
area call); anything irregular is handed to the per-annotation validator (:func:`_detailed_gt_tracks`), which
raises the :class:`~.ytvis_format.YTVISFormatError` naming the file, the video id and the key. The records,
JSON loading and the segmentation converter are in :mod:`.ytvis_format`; :mod:`.results_io` re-exports
:func:`load_ground_truth`.
"""

from __future__ import annotations

import operator
from itertools import chain, compress, repeat
from typing import Any, Dict, List, Optional

import numpy as np

from .ytvis_format import (
    _DICT_TYPE_ID,
    _NONE_ID,
    _NONE_TYPE_ID,
    _STR_TYPE_ID,
    GroundTruth,
    JsonSource,
    Track,
    VideoInfo,
    YTVISFormatError,
    _frame_areas,
    _is_int,
    _is_number,
    _truthy_mean,
    _type_ids,
    batched_area,
    load_json,
    load_json_fast,
    to_compressed_rle,
)

__all__ = ["load_ground_truth"]


def _parse_videos(videos: Any, name: str) -> Dict[int, VideoInfo]:
    if not isinstance(videos, list):
        raise YTVISFormatError(f"ground truth {name!r}: 'videos' must be a list")
    out: Dict[int, VideoInfo] = {}
    for i, v in enumerate(videos):
        if not isinstance(v, dict) or not _is_int(v.get("id")):
            raise YTVISFormatError(f"ground truth {name!r}: videos[{i}] has no integer 'id'")
        vid = int(v["id"])
        where = f"ground truth {name!r}, video_id {vid}"
        if vid in out:
            raise YTVISFormatError(f"{where}: duplicate video id")
        for key in ("height", "width"):
            if not _is_int(v.get(key)) or v[key] <= 0:
                raise YTVISFormatError(f"{where}: missing or invalid '{key}'")
        if _is_int(v.get("length")):
            length = int(v["length"])
        elif isinstance(v.get("file_names"), list):
            length = len(v["file_names"])
        else:
            raise YTVISFormatError(f"{where}: needs 'length' or 'file_names' to know the number of frames")
        if length <= 0:
            raise YTVISFormatError(f"{where}: the video has no frames (length {length})")
        if isinstance(v.get("file_names"), list) and len(v["file_names"]) != length:
            raise YTVISFormatError(
                f"{where}: 'length' is {length} but 'file_names' lists {len(v['file_names'])} frames"
            )
        out[vid] = VideoInfo(vid, int(v["height"]), int(v["width"]), length)
    return out


def load_ground_truth(gt: JsonSource) -> GroundTruth:
    """Parse and validate a YouTube-VIS / OVIS ground-truth JSON (path or dict).

    Files are parsed with orjson when it is installed; any validation error is then reported from a ``json``
    parse (see :func:`load_json_fast`), so accepted inputs, values and messages are ``json``'s.

    Raises:
        YTVISFormatError: naming the file, the video id and the key for anything malformed: missing
            ``videos`` / ``categories``, annotations of unknown videos or categories, segmentation lists
            whose length differs from the video's, masks of the wrong size, non-positive or duplicate
            annotation ids (the official matcher uses id 0 for "unmatched").
    """
    data, name, used_orjson = load_json_fast(gt, "ground truth")
    if used_orjson:
        try:
            return _parse_ground_truth(data, name, orjson_numbers=True)
        except (YTVISFormatError, _NeedsJson):
            del data
            data, name = load_json(gt, "ground truth")
    return _parse_ground_truth(data, name)


class _NeedsJson(Exception):
    """An orjson-parsed value that may differ from json's (an integer beyond 64 bits, read as a float)."""


def _parse_ground_truth(data: Any, name: str, orjson_numbers: bool = False) -> GroundTruth:
    if not isinstance(data, dict):
        raise YTVISFormatError(f"ground truth {name!r}: expected a JSON object, got {type(data).__name__}")
    for key in ("videos", "categories"):
        if key not in data:
            raise YTVISFormatError(f"ground truth {name!r}: missing key '{key}'")
    videos = _parse_videos(data["videos"], name)
    cats = data["categories"]
    if not isinstance(cats, list) or not all(isinstance(c, dict) and _is_int(c.get("id")) for c in cats):
        raise YTVISFormatError(f"ground truth {name!r}: 'categories' must be a list of objects with integer 'id'")
    category_ids = sorted({int(c["id"]) for c in cats})
    anns = data.get("annotations")
    tracks = _bulk_gt_tracks(anns or [], name, videos, category_ids, orjson_numbers)
    if tracks is None:
        tracks = _detailed_gt_tracks(anns or [], name, videos, category_ids)
    return GroundTruth(name, videos, category_ids, tracks, bool(anns))


def _bulk_gt_tracks(anns: List[Any], name: str, videos: Dict[int, VideoInfo], category_ids: List[int],
                    orjson_numbers: bool) -> Optional[List[Track]]:
    """The annotations as Tracks: per-annotation checks, then all frames at once (one batched area call).

    Returns ``None`` if an annotation fails a check (the detailed validator then reports the first error in
    file order); a malformed frame is reported here, in file order, with the detailed validator's message.
    """
    cat_set = set(category_ids)
    seen = set()
    for ann in anns:
        if not isinstance(ann, dict) or not all(k in ann for k in ("id", "video_id", "category_id", "segmentations")):
            return None
        ann_id, vid, segs, areas = ann["id"], ann["video_id"], ann["segmentations"], ann.get("areas")
        if (vid not in videos or not _is_int(ann_id) or ann_id <= 0 or ann_id in seen
                or ann["category_id"] not in cat_set or not isinstance(segs, list)
                or len(segs) != videos[vid].length):
            return None
        seen.add(ann_id)
        if areas is not None and not isinstance(areas, list):
            return None
    area_values = list(chain.from_iterable(a for a in map(dict.get, anns, repeat("areas")) if a is not None))
    if not set(map(type, area_values)) <= {type(None), int, float}:
        return None  # the detailed validator reports the annotation
    truthy = list(filter(None, area_values))
    if orjson_numbers and truthy and (max(truthy) >= 2.0 ** 63 or min(truthy) <= -2.0 ** 63):
        raise _NeedsJson
    lengths = np.array([len(ann["segmentations"]) for ann in anns], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    flat = list(chain.from_iterable(ann["segmentations"] for ann in anns))
    # RLE dicts with str counts of the video's size are kept as they are (as the detailed validator does)
    tid = _type_ids(flat)
    is_dict = tid == _DICT_TYPE_ID
    dicts = list(compress(flat, is_dict.tolist()))
    ok = _type_ids(list(map(dict.get, dicts, repeat("counts")))) == _STR_TYPE_ID
    expected = [[videos[ann["video_id"]].height, videos[ann["video_id"]].width] for ann in anns]
    ann_of = np.repeat(np.arange(len(anns)), lengths)
    dict_expected = [expected[i] for i in ann_of[is_dict].tolist()]
    ok &= np.fromiter(map(operator.eq, map(dict.get, dicts, repeat("size")), dict_expected), dtype=bool,
                      count=len(dicts))
    good = np.zeros(len(flat), dtype=bool)
    good[is_dict] = ok
    for f in np.flatnonzero(~good & (tid != _NONE_TYPE_ID)).tolist():
        i = int(ann_of[f])
        where = f"ground truth {name!r}, video_id {anns[i]['video_id']}, annotations[{i}], frame {f - int(starts[i])}"
        flat[f] = to_compressed_rle(flat[f], videos[anns[i]["video_id"]], where)
    is_present = np.fromiter(map(id, flat), dtype=np.int64, count=len(flat)) != _NONE_ID
    frame_areas = np.zeros(len(flat), dtype=np.int64)
    frame_areas[is_present] = batched_area(list(compress(flat, is_present.tolist())))
    tracks = []
    for i, ann in enumerate(anns):
        s0, n = int(starts[i]), int(lengths[i])
        fa = frame_areas[s0:s0 + n]
        areas = ann.get("areas")
        # Not in the official format, but synthetic files may omit 'areas': then the masks' own areas.
        avg_area = _truthy_mean(fa.tolist() if areas is None else areas)
        iscrowd = ann.get("iscrowd", 0) or 0
        tracks.append(Track(int(ann["id"]), int(ann["video_id"]), int(ann["category_id"]), 1.0, int(bool(iscrowd)),
                            flat[s0:s0 + n], fa, avg_area))
    return tracks


def _detailed_gt_tracks(anns: List[Any], name: str, videos: Dict[int, VideoInfo], category_ids: List[int]
                        ) -> List[Track]:
    """The per-annotation validator (raises at the first malformed annotation, in file order)."""
    tracks: List[Track] = []
    seen_ids = set()
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise YTVISFormatError(f"ground truth {name!r}: annotations[{i}] is not an object")
        vid = ann.get("video_id")
        where = f"ground truth {name!r}, video_id {vid}, annotations[{i}]"
        for key in ("id", "video_id", "category_id", "segmentations"):
            if key not in ann:
                raise YTVISFormatError(f"{where}: missing key '{key}'")
        if vid not in videos:
            raise YTVISFormatError(f"{where}: video_id not in 'videos'")
        ann_id = ann["id"]
        if not _is_int(ann_id) or ann_id <= 0:
            raise YTVISFormatError(f"{where}: annotation 'id' must be a positive integer, got {ann_id!r}")
        if ann_id in seen_ids:
            raise YTVISFormatError(f"{where}: duplicate annotation id {ann_id}")
        seen_ids.add(ann_id)
        if ann["category_id"] not in category_ids:
            raise YTVISFormatError(f"{where}: category_id {ann['category_id']!r} not in 'categories'")
        video = videos[vid]
        segs = ann["segmentations"]
        if not isinstance(segs, list) or len(segs) != video.length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise YTVISFormatError(f"{where}: 'segmentations' has {n} entries, the video has {video.length} frames")
        rles = [to_compressed_rle(s, video, f"{where}, frame {t}") for t, s in enumerate(segs)]
        frame_areas = _frame_areas(rles)
        areas = ann.get("areas")
        if areas is None:
            # Not in the official format, but synthetic files may omit it: use the masks' own areas.
            avg_area = _truthy_mean(frame_areas.tolist())
        else:
            if not isinstance(areas, list) or not all(a is None or _is_number(a) for a in areas):
                raise YTVISFormatError(f"{where}: 'areas' must be a list of numbers or null")
            avg_area = _truthy_mean(areas)
        iscrowd = ann.get("iscrowd", 0) or 0
        tracks.append(
            Track(int(ann_id), int(vid), int(ann["category_id"]), 1.0, int(bool(iscrowd)), rles, frame_areas, avg_area)
        )
    return tracks

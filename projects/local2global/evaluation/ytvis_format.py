"""The YouTube-VIS / OVIS file format: data model, JSON loading and per-frame segmentation conversion.

The building blocks every loader shares: the parsed records (:class:`VideoInfo`, :class:`Track`,
:class:`GroundTruth`), the error type (:class:`YTVISFormatError`, a ``ValueError`` whose message names the file,
the video id and the offending key), JSON loading (stdlib ``json`` and the faster ``orjson`` path), the
per-frame segmentation converter / validator and the batched pycocotools area helpers.

Accepted segmentation encodings (SPEC §6), per frame:

* ``None`` (or any falsy value such as ``[]``): the object is absent on that frame;
* compressed RLE ``{"size": [H, W], "counts": str | bytes}``;
* uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}`` (official training JSONs);
* polygons ``[[x0, y0, x1, y1, ...], ...]`` (all parts merged into one mask, as the official
  ``annToRLE`` does).

Everything is converted to compressed RLE once, at load time.

Related modules: :mod:`.ground_truth` (ground-truth loading), :mod:`.results_parse` (the memory-mapped
skeleton parser of results files), :mod:`.predictions` (results files as flat arrays) and :mod:`.results_io`
(atomic writing, the zip, and the public import point of all of these).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

try:  # optional: parses a large results file about 10% faster and gives bytes in, objects out
    import orjson
except ImportError:  # pragma: no cover - orjson is pinned in requirements.txt; json is the fallback
    orjson = None

__all__ = [
    "YTVISFormatError",
    "VideoInfo",
    "Track",
    "GroundTruth",
    "JsonSource",
    "load_json",
    "load_json_fast",
    "to_compressed_rle",
    "batched_area",
]

#: pycocotools 2.0.11's ``mask.area`` overflows ("Python integer 256 out of bounds for uint8") on lists of more
#: than 255 RLEs, so batched area calls are chunked.
AREA_BATCH = 255

#: Minimum number of coordinates of one polygon part (three points).
MIN_POLYGON_COORDS = 6

JsonSource = Union[str, os.PathLike, dict, list]


class YTVISFormatError(ValueError):
    """A ground-truth or results file that does not follow the YouTube-VIS format."""


@dataclass(frozen=True)
class VideoInfo:
    """One entry of the ground truth's ``videos`` list."""

    id: int
    height: int
    width: int
    length: int


@dataclass
class Track:
    """One ground-truth annotation or one prediction: a whole-video track of masks.

    Attributes:
        id: annotation id (gt: from the file; predictions: 1-based position in the results file,
            as the official ``loadRes`` numbers them).
        video_id, category_id: dataset ids.
        score: detection score (1.0 for ground truth).
        iscrowd: crowd flag (always 0 for predictions).
        rles: per frame a compressed RLE dict, or ``None`` where the object is absent; length = video length.
        frame_areas: ``(length,)`` int64, the pixel area of each frame's mask (0 where ``None``).
        avg_area: the area used for the small / medium / large ranges. Ground truth: mean of the truthy
            entries of the JSON's ``areas`` field (null and 0 dropped; 0 if none). Predictions: the same
            rule applied to the areas of its own RLEs. This is the official ``ytvoseval`` definition.
    """

    id: int
    video_id: int
    category_id: int
    score: float
    iscrowd: int
    rles: List[Optional[dict]]
    frame_areas: np.ndarray = field(repr=False)
    avg_area: float = 0.0


@dataclass
class GroundTruth:
    """A parsed ground-truth file.

    Attributes:
        name: the file name (or ``<in-memory ground truth>``), used in error messages.
        videos: video id -> :class:`VideoInfo`.
        category_ids: sorted dataset category ids.
        tracks: annotations in file order (empty for hidden validation sets).
        has_annotations: whether the file carries annotations at all (``False`` for the hidden
            validation/test JSONs, whose ``annotations`` key is absent, null or empty).
    """

    name: str
    videos: Dict[int, VideoInfo]
    category_ids: List[int]
    tracks: List[Track]
    has_annotations: bool


# ----------------------------------------------------------------------------------------------------------
# JSON loading
# ----------------------------------------------------------------------------------------------------------
def _opener():
    try:
        from detectron2.utils.file_io import PathManager

        return PathManager.open
    except ImportError:  # pragma: no cover - detectron2 is a dependency, but keep the CLI usable
        return open


def load_json(source: JsonSource, what: str) -> Tuple[Any, str]:
    """Return ``(parsed object, name)`` for a path or an already parsed object (stdlib ``json``).

    Args:
        source: a path (str / PathLike; opened through detectron2's ``PathManager`` when available)
            or the parsed JSON itself.
        what: ``"ground truth"`` or ``"results"``, used in the name of in-memory sources.
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            with _opener()(name, "r") as f:
                return json.load(f), name
        except FileNotFoundError as e:
            raise YTVISFormatError(f"{what} file {name!r} does not exist") from e
        except json.JSONDecodeError as e:
            raise YTVISFormatError(f"{what} file {name!r} is not valid JSON: {e}") from e
    return source, f"<in-memory {what}>"


def load_json_fast(source: JsonSource, what: str) -> Tuple[Any, str, bool]:
    """Like :func:`load_json`, parsing with ``orjson`` when it is installed; returns ``(obj, name, used_orjson)``.

    ``orjson`` and ``json`` agree on every well-formed file except three corners, where ``json`` is the
    reference: ``NaN`` / ``Infinity`` literals (orjson rejects them: the file is then re-read with ``json``)
    and integers beyond 64 bits (orjson returns floats). Callers therefore re-parse with :func:`load_json`
    before reporting any validation error, so that messages and accepted inputs are exactly ``json``'s.
    """
    if orjson is None or not isinstance(source, (str, os.PathLike)):
        return (*load_json(source, what), False)
    name = os.fspath(source)
    try:
        with _opener()(name, "rb") as f:
            raw = f.read()
    except FileNotFoundError as e:
        raise YTVISFormatError(f"{what} file {name!r} does not exist") from e
    try:
        return orjson.loads(raw), name, True
    except orjson.JSONDecodeError:
        del raw
        return (*load_json(source, what), False)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (Real, np.integer, np.floating)) and not isinstance(x, bool)


# ----------------------------------------------------------------------------------------------------------
# Segmentations
# ----------------------------------------------------------------------------------------------------------
def to_compressed_rle(seg: Any, video: VideoInfo, where: str) -> Optional[dict]:
    """Convert one frame's segmentation to a compressed RLE (or ``None`` for an absent object).

    Args:
        seg: ``None`` / falsy, compressed RLE, uncompressed RLE or polygon list (see module docstring).
        video: the video the mask belongs to; the mask must be ``video.height x video.width``.
        where: prefix for error messages (file, video id, track, frame).

    Returns:
        ``{"size": [H, W], "counts": str | bytes}`` or ``None``. Falsy inputs are ``None``, as in the
        official evaluator (``if seg:``); an RLE dict of an empty mask stays an (empty) RLE.
    """
    if not seg:
        return None
    h, w = video.height, video.width
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise YTVISFormatError(f"{where}: RLE needs 'size' and 'counts' keys, got keys {sorted(seg)}")
        size = seg["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(x) for x in size)
                and [int(size[0]), int(size[1])] == [h, w]):
            raise YTVISFormatError(
                f"{where}: mask size {size} differs from the video size [{h}, {w}] (height, width)"
            )
        counts = seg["counts"]
        if isinstance(counts, (str, bytes)):
            return seg if isinstance(size, list) else {"size": [h, w], "counts": counts}
        if isinstance(counts, (list, tuple)):
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != h * w:
                raise YTVISFormatError(
                    f"{where}: uncompressed RLE counts must be non-negative integers summing to H*W = {h * w}"
                )
            return mask_utils.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w)
        raise YTVISFormatError(f"{where}: RLE 'counts' must be a string or a list, got {type(counts).__name__}")
    if isinstance(seg, (list, tuple)):
        if not all(isinstance(p, (list, tuple)) for p in seg):
            raise YTVISFormatError(f"{where}: a polygon segmentation must be a list of coordinate lists")
        parts = [list(p) for p in seg if p]
        for p in parts:
            if not (len(p) >= MIN_POLYGON_COORDS and len(p) % 2 == 0 and all(_is_number(v) for v in p)):
                raise YTVISFormatError(
                    f"{where}: a polygon must be a list of parts, each an even-length list of >= "
                    f"{MIN_POLYGON_COORDS} numbers"
                )
        if not parts:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(parts, h, w))
    raise YTVISFormatError(f"{where}: unsupported segmentation of type {type(seg).__name__}")


def _frame_areas(rles: Sequence[Optional[dict]]) -> np.ndarray:
    """``(len(rles),)`` int64 pixel areas, 0 for ``None`` frames (batched pycocotools calls)."""
    out = np.zeros(len(rles), dtype=np.int64)
    present = [i for i, r in enumerate(rles) if r is not None]
    if present:
        out[present] = batched_area([rles[i] for i in present])
    return out


def batched_area(rles: Sequence[dict]) -> np.ndarray:
    """``(len(rles),)`` uint32 areas of compressed RLEs, in calls of at most :data:`AREA_BATCH` RLEs."""
    if not rles:
        return np.zeros(0, dtype=np.uint32)
    return np.concatenate(
        [np.asarray(mask_utils.area(list(rles[i:i + AREA_BATCH])), dtype=np.uint32)
         for i in range(0, len(rles), AREA_BATCH)]
    )


def _truthy_mean(values: Sequence[Any]) -> float:
    """Mean of the truthy entries (the official ``avg_area`` rule), 0 if there are none."""
    kept = [v for v in values if v]
    return float(np.array(kept).mean()) if kept else 0.0


_NONE_TYPE_ID = id(type(None))
_DICT_TYPE_ID = id(dict)
_STR_TYPE_ID = id(str)
_TRUE_ID = id(True)
_NONE_ID = id(None)


def _type_ids(objs: List[Any]) -> np.ndarray:
    """``(len(objs),)`` int64 ``id(type(o))`` of every object (C-level map: ~20 ns per object)."""
    return np.fromiter(map(id, map(type, objs)), dtype=np.int64, count=len(objs))

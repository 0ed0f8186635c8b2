"""Reading, validating and atomically writing YouTube-VIS / OVIS ground truth and results JSON.

The fast evaluator (:mod:`local2global.evaluation.ytvis`) parses its inputs here, so every malformed
file is reported the same way: a :class:`YTVISFormatError` (a ``ValueError``) whose message names the
file, the video id and the offending key.

Accepted segmentation encodings (SPEC §6), per frame:

* ``None`` (or any falsy value such as ``[]``): the object is absent on that frame;
* compressed RLE ``{"size": [H, W], "counts": str | bytes}``;
* uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}`` (official training JSONs);
* polygons ``[[x0, y0, x1, y1, ...], ...]`` (all parts merged into one mask, as the official
  ``annToRLE`` does).

Everything is converted to compressed RLE once, at load time.

Results files are read by :func:`load_prediction_arrays` as flat arrays: a local file is first parsed as a
skeleton (:func:`parse_results_skeleton`: the RLE objects cut out by a regex pass, kept as bytes, the rest parsed
by orjson) and validated in bulk; anything irregular falls back to orjson / json and then to the original
per-prediction validator, which produces the error messages. Accepted inputs, values and messages are the same
on every path (tested).
"""

from __future__ import annotations

import io
import json
import logging
import math
import mmap
import operator
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from collections import deque
from itertools import chain, compress, repeat
from numbers import Real
from collections.abc import Sequence
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

try:  # optional: parses a large results file about 10% faster and gives bytes in, objects out
    import orjson
except ImportError:  # pragma: no cover - orjson is pinned in requirements.txt; json is the fallback
    orjson = None

logger = logging.getLogger(__name__)

__all__ = [
    "YTVISFormatError",
    "VideoInfo",
    "Track",
    "GroundTruth",
    "load_json",
    "load_ground_truth",
    "load_predictions",
    "load_prediction_arrays",
    "PredictionArrays",
    "to_compressed_rle",
    "atomic_write_bytes",
    "atomic_write_json",
    "write_results_zip",
    "RESULTS_JSON_NAME",
]

#: Name of the results file inside the benchmark-server zip (what the CodaLab servers expect).
RESULTS_JSON_NAME = "results.json"

#: Keys every prediction of a results file must have.
PREDICTION_KEYS = ("video_id", "category_id", "score", "segmentations")

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


_INT = rb"(0|[1-9][0-9]*)"
#: A whole compressed-RLE object as ``json.dump`` writes it by default (``(", ", ": ")`` separators) and compact
#: (``(",", ":")``, also orjson's): ``{"size": [h, w], "counts": "<RLE string>"}``; groups h, w, counts.
_RLE_OBJECT_RES = {
    b'{"size": [': re.compile(rb'\{"size": \[' + _INT + rb", " + _INT + rb'\], "counts": "([^"]*)"\}'),
    b'{"size":[': re.compile(rb'\{"size":\[' + _INT + rb"," + _INT + rb'\],"counts":"([^"]*)"\}'),
}
#: Lengths of the literal text of each layout: before h, between h and w, between w and the string, after it.
_RLE_OBJECT_LITERALS = {b'{"size": [': (10, 2, 14, 2), b'{"size":[': (9, 1, 12, 2)}
#: Any ``"counts": "<RLE string>"`` key-value pair (any JSON whitespace around the colon), for other layouts.
_COUNTS_RE = re.compile(rb'"counts"[ \t\n\r]*:[ \t\n\r]*"([^"]*)"')


#: Bytes of the file handled per regex call when whole RLE objects are cut (while they are cache-hot, their
#: backslashes are resolved, and their dicts built and measured by pycocotools).
_CHUNK_BYTES = 1 << 21


@dataclass
class ResultsSkeleton:
    """A results file whose RLE strings were cut out (:func:`parse_results_skeleton`).

    Attributes:
        data: the parsed skeleton.
        whole_objects: True if each cut was a whole RLE object, now the list element ``True``; False if only
            the ``"counts"`` value was cut, now ``"counts": True`` inside the RLE dict.
        counts: without ``whole_objects``, the RLE strings (``bytes``, JSON escapes resolved), in document order.
        rles: with ``whole_objects``, the C cut RLE objects (:class:`CutRLEs`, read from the file on demand).
        areas: with ``whole_objects``, ``(C,)`` int64 pixel areas of ``rles`` (measured while cutting).
        size_index, sizes: with ``whole_objects``, ``(C,)`` index of each cut's ``(h, w)`` into ``sizes``.
    """

    data: Any
    whole_objects: bool
    counts: Optional[List[bytes]] = None
    rles: Optional["CutRLEs"] = None
    areas: Optional[np.ndarray] = None
    size_index: Optional[np.ndarray] = None
    sizes: Optional[List[Tuple[int, int]]] = None


class CutRLEs(Sequence):
    """The RLE objects cut out of a memory-mapped results file, materialised on demand.

    Only their positions are kept (``(C,)`` offset and length of each raw string in the file, and whether it
    holds an escaped backslash), so the strings of a large file do not have to stay in memory; the few that the
    IoU stage reads are sliced again from the map. Item ``k`` is ``{"size": [h, w], "counts": bytes}`` (one
    shared ``size`` list per distinct size).
    """

    def __init__(self, buf, offsets: np.ndarray, lengths: np.ndarray, escaped: np.ndarray, size_index: np.ndarray,
                 sizes: List[Tuple[int, int]]):
        self.buf, self.offsets, self.lengths, self.escaped = buf, offsets, lengths, escaped
        self.size_index = size_index
        self._size_lists = [[h, w] for h, w in sizes]

    def __len__(self) -> int:
        return int(self.offsets.size)

    def counts(self, index: Sequence[int]) -> List[bytes]:
        """The strings of the cuts ``index`` (escapes resolved)."""
        index = np.asarray(index, dtype=np.int64)
        buf = self.buf
        out = [buf[o:o + n] for o, n in zip(self.offsets[index].tolist(), self.lengths[index].tolist())]
        for j in np.flatnonzero(self.escaped[index]).tolist():
            out[j] = out[j].replace(b"\\\\", b"\\")
        return out

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        k = int(k)
        if k < 0:
            k += len(self)
        return {"size": self._size_lists[int(self.size_index[k])], "counts": self.counts([k])[0]}


class FrameRLEs(Sequence):
    """The RLEs of a results file's present frames in frame order: cut objects (:class:`CutRLEs`) and, where a frame
    was not cut (another layout or encoding), its own dict.

    Attributes:
        cut_index: ``(R,)`` int64 index into ``cut`` of each RLE, -1 where it is in ``others``.
        others: ``{rle index: dict}`` of the RLEs that were not cut.
    """

    def __init__(self, cut: Optional[CutRLEs], cut_index: np.ndarray, others: Dict[int, dict]):
        self.cut, self.cut_index, self.others = cut, cut_index, others

    def __len__(self) -> int:
        return int(self.cut_index.size)

    def counts(self, index: Sequence[int]) -> list:
        """The ``counts`` of the RLEs ``index`` (bytes or str)."""
        index = np.asarray(index, dtype=np.int64)
        ci = self.cut_index[index]
        out = [None] * index.size
        from_cut = np.flatnonzero(ci >= 0)
        if from_cut.size:
            for j, c in zip(from_cut.tolist(), self.cut.counts(ci[from_cut])):
                out[j] = c
        for j in np.flatnonzero(ci < 0).tolist():
            out[j] = self.others[int(index[j])]["counts"]
        return out

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        k = int(k)
        if k < 0:
            k += len(self)
        c = int(self.cut_index[k])
        return self.cut[c] if c >= 0 else self.others[k]


def rle_counts(rles: Sequence[dict], index: Sequence[int]) -> list:
    """``[rles[j]["counts"] for j in index]``, read in bulk when ``rles`` is lazy (:class:`FrameRLEs`)."""
    if isinstance(rles, FrameRLEs):
        return rles.counts(index)
    return [rles[j]["counts"] for j in (index.tolist() if isinstance(index, np.ndarray) else index)]


def parse_results_skeleton(path: str, timings: Optional[dict] = None) -> Optional[ResultsSkeleton]:
    """Parse a results file with its RLE strings cut out by regex passes and the rest parsed by orjson.

    A results file is ~90% RLE ``counts`` strings. Building one Python ``str`` per string (json / orjson), then
    one dict and one size list per frame, and re-encoding the string for pycocotools costs more than everything
    else; here ``re.split`` over the memory-mapped file replaces every RLE object
    ``{"size": [h, w], "counts": "..."}`` (in the layout of the file's first one; or, for other layouts, every
    ``"counts": "..."`` pair) by ``true``, the much smaller remainder (the skeleton) is parsed by orjson, and
    the strings stay ``bytes`` (what pycocotools reads). :func:`_bulk_prediction_arrays` puts the k-th cut back
    at the k-th ``True`` of the segmentation lists (document order) and accepts the file only if those are
    exactly as many as the cuts.

    Why the skeleton parses exactly as the file with its cuts replaced: the skeleton text contains ``true``
    exactly once per cut (checked), so every ``True`` in the parsed skeleton comes from a cut. By induction
    over the cuts in document order: if all earlier replacements kept the JSON structure, the lexer is in the
    same state before a cut in both texts; a ``true`` that parses as a segmentation-list element (or as the
    value of a ``counts`` key) was lexed outside any string, so the cut text started with a structural token
    and is a complete JSON value (an object of two integers and a string, or a key and a string; the string
    content has no unescaped quote, and escapes are checked below), whose replacement keeps the structure. A
    cut that started inside a string yields a ``true`` that is swallowed in a string, lands elsewhere, or breaks
    the JSON: the count check or orjson then rejects the skeleton. The file is cut in chunks (at the start of
    an RLE object): any set of non-overlapping matches of the pattern gives such a skeleton.

    Returns:
        The :class:`ResultsSkeleton`, or ``None`` (the caller parses the whole file normally) when the path is not
        a local file, orjson is missing, the skeleton is not valid JSON, the file contains ``true`` elsewhere, or
        an RLE string holds a JSON escape other than an escaped backslash (its raw bytes would not be the
        string's).
    """
    if orjson is None or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # e.g. an empty file cannot be mapped
        return None
    head = buf[: 1 << 20]
    found = [(head.find(prefix), prefix) for prefix in _RLE_OBJECT_RES if head.find(prefix) >= 0]
    out = _cut_rle_objects(buf, min(found)[1], timings) if found else _cut_counts(buf)
    if out is None or not found:
        buf.close()  # else the cut RLEs keep reading from it (closed when they are freed)
    if out is None:
        return None
    skeleton, cut = out
    try:
        cut.data = orjson.loads(skeleton)
    except orjson.JSONDecodeError:
        return None
    return cut


def _unescape(counts: List[bytes]) -> bool:
    """Resolve escaped backslashes in place; False if a string holds any other JSON escape."""
    found = np.fromiter(map(bytes.find, counts, repeat(b"\\")), dtype=np.int64, count=len(counts))
    idx = np.flatnonzero(found >= 0).tolist()
    if not idx:
        return True
    raw = [counts[i] for i in idx]
    unescaped = list(map(bytes.replace, raw, repeat(b"\\\\"), repeat(b"\\")))
    # every escape is an escaped backslash iff the backslashes are exactly twice the pairs removed (per string
    # the count is at least twice the pairs, so equal totals mean equality for each string)
    if sum(map(bytes.count, raw, repeat(b"\\"))) != 2 * (sum(map(len, raw)) - sum(map(len, unescaped))):
        return False
    deque(map(counts.__setitem__, idx, unescaped), maxlen=0)
    return True


def _cut_counts(buf) -> Optional[Tuple[bytes, ResultsSkeleton]]:
    """Skeleton text and cuts with ``"counts": "..."`` pairs replaced by ``"counts":true``."""
    parts = _COUNTS_RE.split(buf)
    counts = parts[1::2]
    skeleton = b'"counts":true'.join(parts[0::2])
    del parts
    if skeleton.count(b"true") != len(counts) or not _unescape(counts):
        return None
    return skeleton, ResultsSkeleton(None, False, counts=counts)


def _cut_rle_objects(buf, prefix: bytes, timings: Optional[dict] = None) -> Optional[Tuple[bytes, ResultsSkeleton]]:
    """Skeleton text and cuts with whole RLE objects (layout of ``prefix``) replaced by ``true``, in chunks.

    Each chunk's strings are measured (pycocotools ``area``) and their positions recorded while they are
    cache-hot; the strings themselves are then dropped (see :class:`CutRLEs`). ``timings`` (if given) receives
    the time of the regex passes and of the pycocotools area calls (``results_regex_s``, ``results_rle_area_s``).
    """
    regex_s = area_s = 0.0
    pattern = _RLE_OBJECT_RES[prefix]
    lit_h, lit_w, lit_c, lit_end = _RLE_OBJECT_LITERALS[prefix]
    size_of: Dict[Tuple[bytes, bytes], int] = {}
    size_lists: List[List[int]] = []
    pieces, areas, index, offsets, lengths, escaped = [], [], [], [], [], []
    pos, n = 0, len(buf)
    view = memoryview(buf)
    try:
        while pos < n:
            end = n if pos + _CHUNK_BYTES >= n else buf.find(prefix, pos + _CHUNK_BYTES)
            end = n if end < 0 else end
            tic = time.perf_counter()
            parts = pattern.split(view[pos:end])
            regex_s += time.perf_counter() - tic
            pieces.append(b"true".join(parts[0::4]))
            # where each raw string starts in the file: the text before it, plus the literals and digits
            lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
            before, h_len, w_len, c_len = lens[0:-1:4], lens[1::4], lens[2::4], lens[3::4]
            match_len = lit_h + h_len + lit_w + w_len + lit_c + c_len + lit_end
            start = pos + np.cumsum(before + match_len) - match_len  # start of each match
            offsets.append(start + lit_h + h_len + lit_w + w_len + lit_c)
            lengths.append(c_len)
            counts, heights, widths = parts[3::4], parts[1::4], parts[2::4]
            del parts
            if not _unescape(counts):
                return None
            escaped.append(np.fromiter(map(len, counts), dtype=np.int64, count=len(counts)) < c_len)
            if heights and heights.count(heights[0]) == len(heights) and widths.count(widths[0]) == len(widths):
                keys = [(heights[0], widths[0])]
            else:
                keys = list(zip(heights, widths))
            for key in set(keys) - size_of.keys():
                size_of[key] = len(size_lists)
                size_lists.append([int(key[0]), int(key[1])])
            if len(keys) == 1:
                j = size_of[keys[0]]
                index.append(np.full(len(counts), j, dtype=np.int64))
            else:
                index.append(np.array(list(map(size_of.__getitem__, keys)), dtype=np.int64))
            # the area does not depend on the declared size
            chunk_rles = [{"size": _UNIT_SIZE, "counts": c} for c in counts]
            tic = time.perf_counter()
            areas.append(batched_area(chunk_rles))
            area_s += time.perf_counter() - tic
            del chunk_rles
            del counts
            pos = end
    finally:
        view.release()
    if timings is not None:
        timings["results_regex_s"], timings["results_rle_area_s"] = regex_s, area_s
    skeleton = b"".join(pieces)
    size_index = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
    if skeleton.count(b"true") != size_index.size:
        return None
    sizes = [tuple(x) for x in size_lists]
    rles = CutRLEs(buf, np.concatenate(offsets), np.concatenate(lengths), np.concatenate(escaped), size_index, sizes)
    return skeleton, ResultsSkeleton(None, True, rles=rles, areas=np.concatenate(areas).astype(np.int64),
                                     size_index=size_index, sizes=sizes)


_UNIT_SIZE = [1, 1]


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


# ----------------------------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------------
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


_NONE_TYPE_ID = id(type(None))
_DICT_TYPE_ID = id(dict)
_STR_TYPE_ID = id(str)
_TRUE_ID = id(True)
_NONE_ID = id(None)


def _type_ids(objs: List[Any]) -> np.ndarray:
    """``(len(objs),)`` int64 ``id(type(o))`` of every object (C-level map: ~20 ns per object)."""
    return np.fromiter(map(id, map(type, objs)), dtype=np.int64, count=len(objs))


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


# ----------------------------------------------------------------------------------------------------------
# Atomic writing
# ----------------------------------------------------------------------------------------------------------
def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, fsync, ``os.replace``.

    A crash leaves either the previous file or the new one, never a half-written one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def atomic_write_json(obj: Any, path: str) -> None:
    """Serialise ``obj`` (bytes RLE counts become ASCII strings) and write it atomically to ``path``."""
    atomic_write_bytes(path, json.dumps(obj, default=_jsonable).encode("utf-8"))


def write_results_zip(results: List[dict], path: str) -> None:
    """Write a benchmark-server-ready zip holding :data:`RESULTS_JSON_NAME` (atomically)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(RESULTS_JSON_NAME, json.dumps(results, default=_jsonable))
    atomic_write_bytes(path, buf.getvalue())

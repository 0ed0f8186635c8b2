"""The fast parser of results files: RLE objects cut out of the memory-mapped file by regex passes.

:func:`parse_results_skeleton` replaces every RLE object (or ``"counts"`` string) of a local results file by
``true``, keeps the cut strings as ``bytes`` (what pycocotools reads; lazily, as positions in the map:
:class:`CutRLEs`) and parses only the small remainder, the skeleton, with orjson. :class:`FrameRLEs` presents the
RLEs of the present frames in frame order to the evaluator, and :func:`rle_counts` reads their ``counts`` in bulk.
The cuts are put back and validated by :func:`.predictions._bulk_prediction_arrays`; everything irregular is
left to the ordinary parse there. The records and the area helpers are in :mod:`.ytvis_format`;
:mod:`.results_io` re-exports the public names.
"""

from __future__ import annotations

import mmap
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .ytvis_format import batched_area, orjson

__all__ = ["ResultsSkeleton", "CutRLEs", "FrameRLEs", "rle_counts", "parse_results_skeleton"]

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


class _LazyRLESequence(Sequence):
    """A read-only sequence whose items are built on access: slices give lists, negative indices count from the end;
    subclasses define ``__len__`` and ``_item(k)`` for ``0 <= k < len``."""

    def _item(self, k: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._item(j) for j in range(*k.indices(len(self)))]
        k = int(k)
        if k < 0:
            k += len(self)
        return self._item(k)


class CutRLEs(_LazyRLESequence):
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

    def _item(self, k: int) -> dict:
        return {"size": self._size_lists[int(self.size_index[k])], "counts": self.counts([k])[0]}


class FrameRLEs(_LazyRLESequence):
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

    def _item(self, k: int) -> dict:
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

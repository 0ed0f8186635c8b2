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
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

logger = logging.getLogger(__name__)

__all__ = [
    "YTVISFormatError",
    "VideoInfo",
    "Track",
    "GroundTruth",
    "load_json",
    "load_ground_truth",
    "load_predictions",
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
def load_json(source: JsonSource, what: str) -> Tuple[Any, str]:
    """Return ``(parsed object, name)`` for a path or an already parsed object.

    Args:
        source: a path (str / PathLike; opened through detectron2's ``PathManager`` when available)
            or the parsed JSON itself.
        what: ``"ground truth"`` or ``"results"``, used in the name of in-memory sources.
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            from detectron2.utils.file_io import PathManager

            opener = PathManager.open
        except ImportError:  # pragma: no cover - detectron2 is a dependency, but keep the CLI usable
            opener = open
        try:
            with opener(name, "r") as f:
                return json.load(f), name
        except FileNotFoundError as e:
            raise YTVISFormatError(f"{what} file {name!r} does not exist") from e
        except json.JSONDecodeError as e:
            raise YTVISFormatError(f"{what} file {name!r} is not valid JSON: {e}") from e
    return source, f"<in-memory {what}>"


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

    Raises:
        YTVISFormatError: naming the file, the video id and the key for anything malformed: missing
            ``videos`` / ``categories``, annotations of unknown videos or categories, segmentation lists
            whose length differs from the video's, masks of the wrong size, non-positive or duplicate
            annotation ids (the official matcher uses id 0 for "unmatched").
    """
    data, name = load_json(gt, "ground truth")
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
    has_annotations = bool(anns)
    tracks: List[Track] = []
    seen_ids = set()
    for i, ann in enumerate(anns or []):
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
    return GroundTruth(name, videos, category_ids, tracks, has_annotations)


# ----------------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------------
def load_predictions(results: JsonSource, gt: GroundTruth) -> List[Track]:
    """Parse and validate a results file (path or list) against a parsed ground truth.

    Returns:
        One :class:`Track` per prediction in file order; ``id`` is the 1-based file position.

    Raises:
        YTVISFormatError: naming the file and video id for: a non-list file, missing keys, a video id that
            is not in the ground truth (a prediction file from another dataset), an unknown category id,
            a non-finite score, a segmentation list whose length differs from the video's, or a mask whose
            size differs from the video's.
    """
    data, name = load_json(results, "results")
    if not isinstance(data, list):
        raise YTVISFormatError(f"results {name!r}: expected a JSON list of predictions, got {type(data).__name__}")
    category_ids = set(gt.category_ids)
    tracks: List[Track] = []
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
        rles = [
            # fast path for the results format (compressed RLE of the right size); everything else is checked
            s if (type(s) is dict and type(s.get("counts")) is str and s.get("size") == size)
            else to_compressed_rle(s, video, f"{where}, frame {t}")
            for t, s in enumerate(segs)
        ]
        tracks.append(Track(i + 1, int(vid), int(pred["category_id"]), float(score), 0, rles, None, 0.0))
    _fill_prediction_areas(tracks)
    return tracks


def _fill_prediction_areas(tracks: List[Track]) -> None:
    """Set ``frame_areas`` and ``avg_area`` of every prediction (all RLEs of the file in batched ``area`` calls).

    ``avg_area`` follows the official ``loadRes``: the mean of the truthy areas of its own masks
    (uint32 areas, float64 mean); 0 when every frame is null or empty.
    """
    if not tracks:
        return
    lengths = np.array([len(tr.rles) for tr in tracks], dtype=np.int64)
    present = np.fromiter((r is not None for tr in tracks for r in tr.rles), dtype=bool, count=int(lengths.sum()))
    flat_areas = np.zeros(present.size, dtype=np.int64)
    flat_areas[present] = batched_area([r for tr in tracks for r in tr.rles if r is not None])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    # Sums of integers are exact in int64 and in float64, so sum / count equals numpy's mean bit for bit.
    nz_sum = np.add.reduceat(flat_areas, starts) if flat_areas.size else np.zeros(len(tracks), dtype=np.int64)
    nz_cnt = np.add.reduceat((flat_areas > 0).astype(np.int64), starts) if flat_areas.size else nz_sum
    nz_sum = np.where(lengths > 0, nz_sum, 0)  # reduceat of an empty segment returns the next element
    nz_cnt = np.where(lengths > 0, nz_cnt, 0)
    avg = np.divide(nz_sum.astype(np.float64), nz_cnt, out=np.zeros(len(tracks)), where=nz_cnt > 0)
    for tr, a, s0, n in zip(tracks, avg.tolist(), starts.tolist(), lengths.tolist()):
        tr.frame_areas = flat_areas[s0:s0 + n]
        tr.avg_area = a


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

"""Reading the VIPSeg 720p panoptic format (ground truth and predictions) for VPQ / STQ.

Format (``create_panoptic_video_labels.py`` of ``VIPSeg-Dataset``; predictions as its ``eval_net_video.py``
writes them):

* ground-truth JSON ``{"videos": [{"video_id": str, "images": [{"id", "width", "height", "file_name"}]*T}],
  "annotations": [{"video_id": str, "annotations": [{"image_id", "file_name", "segments_info":
  [{"id", "category_id", "iscrowd", "area"}]}]*T}], "categories": [{"id", "name", "isthing", "color"}]}``;
* ground-truth PNGs ``<gt_dir>/<video_id>/<images[t].file_name>``, RGB, segment id ``R + 256 G + 256² B``
  (0 = void);
* prediction JSON ``{"annotations": [{"video_id", "annotations": [{"segments_info": [{"id", "category_id"}]}]*T}]}``
  and PNGs ``<pred_dir>/<video_id>/<images[t].file_name>`` (the gt file name; the official ``pan_pred`` folder).

Frames are paired by position (as the official scripts do); only the ground-truth videos are evaluated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "VPSFormatError",
    "FrameSegments",
    "GroundTruthVideo",
    "VPSGroundTruth",
    "rgb_to_id",
    "id_to_rgb",
    "read_id_png",
    "load_vps_ground_truth",
    "load_vps_predictions",
    "MAX_RGB_ID",
]

#: Segment ids are stored as 24-bit RGB.
MAX_RGB_ID = 256**3 - 1
_CHANNEL = 256


class VPSFormatError(ValueError):
    """A malformed ground-truth or prediction file; the message names the file and the video."""


@dataclass
class FrameSegments:
    """The ``segments_info`` of one frame, in JSON order (duplicates kept: the metrics decide how to merge).

    Attributes:
        ids: ``(S,)`` int64 segment ids.
        category_ids: ``(S,)`` int64.
        iscrowd: ``(S,)`` int64 (0 for predictions).
        area: ``(S,)`` int64 JSON areas (ground truth; -1 for predictions, whose areas come from the PNGs).
    """

    ids: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray


@dataclass
class GroundTruthVideo:
    """One ground-truth video: its name, frame PNG file names and per-frame segments."""

    video_id: str
    file_names: List[str]
    frames: List[FrameSegments]


@dataclass
class VPSGroundTruth:
    """A parsed ground-truth JSON (videos in file order)."""

    videos: List[GroundTruthVideo]
    categories: List[dict]
    json_file: str


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, >=3)`` uint8 -> ``(H, W)`` uint32 ids ``R + 256 G + 256² B`` (panopticapi's ``rgb2id``)."""
    rgb = np.asarray(rgb)
    out = rgb[..., 2].astype(np.uint32)
    out *= _CHANNEL
    out += rgb[..., 1]
    out *= _CHANNEL
    out += rgb[..., 0]
    return out


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """``(H, W)`` integer ids in ``[0, 2^24)`` -> ``(H, W, 3)`` uint8 (panopticapi's ``id2rgb``)."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_RGB_ID):
        raise ValueError(f"segment ids must lie in [0, {MAX_RGB_ID}] to be stored as RGB, got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % _CHANNEL, (ids // _CHANNEL) % _CHANNEL, ids // _CHANNEL**2], axis=-1).astype(np.uint8)


def read_id_png(path: str, video_id: str, what: str) -> np.ndarray:
    """Read an RGB id PNG as ``(H, W)`` uint32 ids.

    Raises:
        VPSFormatError: the file is missing, unreadable or not RGB(A) (naming the file and the video).
    """
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise VPSFormatError(f"video {video_id!r}: {what} PNG {path!r} does not exist") from None
    except OSError as e:
        raise VPSFormatError(f"video {video_id!r}: {what} PNG {path!r} cannot be read: {e}") from e
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise VPSFormatError(
            f"video {video_id!r}: {what} PNG {path!r} has shape {arr.shape}; expected an RGB id image (H, W, 3)"
        )
    return rgb_to_id(arr)


def _load_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise VPSFormatError(f"{what} JSON {path!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise VPSFormatError(f"{what} JSON {path!r} is not valid JSON: {e}") from e


def _segments(frame: dict, where: str, ground_truth: bool) -> FrameSegments:
    if not isinstance(frame, dict) or not isinstance(frame.get("segments_info"), list):
        raise VPSFormatError(f"{where}: missing or malformed 'segments_info' list")
    segs = frame["segments_info"]
    n = len(segs)
    ids = np.empty(n, np.int64)
    cats = np.empty(n, np.int64)
    crowd = np.zeros(n, np.int64)
    area = np.full(n, -1, np.int64)
    required = ("id", "category_id", "area") if ground_truth else ("id", "category_id")
    for i, s in enumerate(segs):
        if not isinstance(s, dict):
            raise VPSFormatError(f"{where}: segments_info[{i}] is not an object")
        missing = [k for k in required if k not in s]
        if missing:
            raise VPSFormatError(f"{where}: segments_info[{i}] misses key(s) {missing}")
        try:
            ids[i] = int(s["id"])
            cats[i] = int(s["category_id"])
            crowd[i] = int(s.get("iscrowd", 0))
            if ground_truth:
                area[i] = int(s["area"])
        except (TypeError, ValueError):
            raise VPSFormatError(f"{where}: segments_info[{i}] has a non-integer field: {s}") from None
        if not 0 <= ids[i] <= MAX_RGB_ID:
            raise VPSFormatError(f"{where}: segment id {ids[i]} is outside the RGB range [0, {MAX_RGB_ID}]")
    return FrameSegments(ids, cats, crowd, area)


def load_vps_ground_truth(json_file: str) -> VPSGroundTruth:
    """Parse a VIPSeg-format ground-truth JSON.

    Raises:
        VPSFormatError: missing keys, a video without annotations, a video whose ``images`` and ``annotations``
            differ in length (the official scripts silently truncate to the shorter; here it is an error),
            duplicate video ids, segments without ``area`` (the official VPQ takes gt areas from the JSON).
    """
    data = _load_json(json_file, "ground-truth")
    for key in ("videos", "annotations", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise VPSFormatError(f"ground-truth JSON {json_file!r}: missing top-level key {key!r}")
    anns: Dict[str, list] = {}
    for a in data["annotations"]:
        anns[a["video_id"]] = a["annotations"]
    videos = []
    seen = set()
    for v in data["videos"]:
        vid = v.get("video_id")
        where = f"ground-truth JSON {json_file!r}, video {vid!r}"
        if vid in seen:
            raise VPSFormatError(f"{where}: duplicate video id")
        seen.add(vid)
        if vid not in anns:
            raise VPSFormatError(f"{where}: the video has no entry in 'annotations'")
        images = v.get("images")
        if not isinstance(images, list) or not images:
            raise VPSFormatError(f"{where}: missing or empty 'images' list")
        frames = anns[vid]
        if len(frames) != len(images):
            raise VPSFormatError(f"{where}: {len(images)} images but {len(frames)} annotated frames")
        file_names = [im["file_name"] for im in images]
        segs = [_segments(f, f"{where}, frame {t} ({file_names[t]})", True) for t, f in enumerate(frames)]
        videos.append(GroundTruthVideo(vid, file_names, segs))
    return VPSGroundTruth(videos, list(data["categories"]), json_file)


def load_vps_predictions(
    json_file: str, ground_truth: VPSGroundTruth, prediction_data: Optional[dict] = None
) -> Dict[str, List[FrameSegments]]:
    """Parse a prediction JSON (or an already loaded dict) into per-video frame segments.

    Videos are keyed by ``video_id``; a repeated video keeps its last entry (as the official dict does);
    videos absent from the ground truth are ignored (logged).

    Raises:
        VPSFormatError: a ground-truth video without predictions, a frame count different from the ground
            truth's, malformed ``segments_info``.
    """
    data = prediction_data if prediction_data is not None else _load_json(json_file, "prediction")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise VPSFormatError(f"prediction JSON {json_file!r}: missing top-level 'annotations' list")
    raw: Dict[str, list] = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "video_id" not in a or not isinstance(a.get("annotations"), list):
            raise VPSFormatError(f"prediction JSON {json_file!r}: every entry needs 'video_id' and an 'annotations' list")
        raw[a["video_id"]] = a["annotations"]
    gt_ids = {v.video_id for v in ground_truth.videos}
    extra = sorted(set(raw) - gt_ids, key=str)
    if extra:
        logger.warning("prediction JSON %s: %d videos not in the ground truth are ignored (e.g. %r)",
                       json_file, len(extra), extra[0])
    out: Dict[str, List[FrameSegments]] = {}
    for v in ground_truth.videos:
        where = f"prediction JSON {json_file!r}, video {v.video_id!r}"
        if v.video_id not in raw:
            raise VPSFormatError(f"{where}: the ground-truth video has no predictions")
        frames = raw[v.video_id]
        if len(frames) != len(v.frames):
            raise VPSFormatError(f"{where}: {len(frames)} predicted frames, the ground truth has {len(v.frames)}")
        out[v.video_id] = [
            _segments(f, f"{where}, frame {t} ({v.file_names[t]})", False) for t, f in enumerate(frames)
        ]
    return out


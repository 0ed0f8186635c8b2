"""Rendering a video panoptic prediction written in VIPSeg's format (``pred.json`` + ``pan_pred/`` RGB-id PNGs).

It reads what :class:`~local2global.evaluation.vps.VPSEvaluator` wrote, so the video shows exactly the maps that
were scored (no second inference). Colours: a *thing* segment by its id, which is the tracker's slot and stays
the same over the video (:func:`~local2global.inference.visualize.track_color`); a *stuff* segment by its
category's colour (one per class, as in VIPSeg's palette). Void (id 0) keeps the frame as it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from local2global.evaluation.vps.panoptic_io import read_id_png
from local2global.inference.visualize import track_color

__all__ = ["draw_panoptic_frame", "render_vps_prediction"]

_ALPHA = 0.55


def _category_color(category: Mapping) -> Tuple[int, int, int]:
    """The category's own ``color`` when the metadata has one, otherwise a colour derived from its id."""
    if category.get("color") is not None:
        return tuple(int(c) for c in category["color"])
    return track_color(1000 + int(category["id"]))


def draw_panoptic_frame(frame_rgb: np.ndarray, ids: np.ndarray, segments: Sequence[Mapping],
                        categories: Mapping[int, Mapping], scale: int = 1) -> np.ndarray:
    """Overlay one panoptic map on its frame: filled segments, thing contours and ``name #id`` labels.

    Args:
        frame_rgb: ``(H, W, 3)`` uint8 RGB.
        ids: ``(H, W)`` int panoptic ids (0 = void).
        segments: the frame's ``segments_info`` (``id``, ``category_id``).
        categories: dataset category id -> ``{"name", "isthing", optional "color"}``.
        scale: integer nearest-neighbour upscaling before drawing, so labels stay legible on small frames.

    Returns:
        ``(H * scale, W * scale, 3)`` uint8 RGB.
    """
    if ids.shape != frame_rgb.shape[:2]:
        raise ValueError(f"panoptic map {ids.shape} and frame {frame_rgb.shape[:2]} differ in size")
    if scale > 1:
        frame_rgb = np.repeat(np.repeat(frame_rgb, scale, axis=0), scale, axis=1)
        ids = np.repeat(np.repeat(ids, scale, axis=0), scale, axis=1)
    out = frame_rgb.astype(np.float32).copy()
    labels = []
    for seg in segments:
        cat = categories[int(seg["category_id"])]
        m = ids == int(seg["id"])
        if not m.any():
            continue
        thing = bool(cat.get("isthing", 0))
        color = track_color(int(seg["id"])) if thing else _category_color(cat)
        out[m] = out[m] * (1 - _ALPHA) + np.asarray(color, np.float32) * _ALPHA
        if thing:
            labels.append((m, f"{cat.get('name', seg['category_id'])} #{int(seg['id'])}", color))
    canvas = np.clip(out, 0, 255).astype(np.uint8)
    font = max(0.3, min(canvas.shape[:2]) / 400.0)
    for m, text, color in labels:
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, color, 1)
        ys, xs = np.nonzero(m)
        org = (int(xs.min()), max(int(ys.min()) - 2, 8))
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, color, 1, cv2.LINE_AA)
    return canvas


def render_vps_prediction(pred_json: str, pred_dir: str, image_dir: str, categories: Sequence[Mapping],
                          video_id: Optional[str] = None, scale: int = 0) -> Tuple[str, List[np.ndarray]]:
    """Draw every frame of one predicted video.

    Args:
        pred_json: the evaluator's ``pred.json`` (``{"annotations": [{"video_id", "annotations": [frames]}]}``).
        pred_dir: its ``pan_pred`` folder (``<video_id>/<file_name>`` RGB-id PNGs).
        image_dir: the dataset's frames, ``<image_dir>/<video_id>/<frame>.jpg`` (VIPSeg's ``images`` layout).
        categories: the dataset's categories (``id``, ``name``, ``isthing``, optional ``color``).
        video_id: the video to draw (default: the longest one).
        scale: upscaling (0: so that the short side is at least 256 px).

    Returns:
        the video id and its rendered ``(H', W', 3)`` uint8 RGB frames.

    Raises:
        FileNotFoundError / ValueError: naming the file or video that is missing or malformed.
    """
    with open(pred_json) as f:
        videos = json.load(f)["annotations"]
    if not videos:
        raise ValueError(f"{pred_json}: no predicted video")
    if video_id is None:
        video = max(videos, key=lambda v: len(v["annotations"]))
    else:
        found = [v for v in videos if str(v["video_id"]) == str(video_id)]
        if not found:
            raise ValueError(f"{pred_json}: no prediction for video {video_id!r}")
        video = found[0]
    vid = str(video["video_id"])
    by_id: Dict[int, Mapping] = {int(c["id"]): c for c in categories}
    frames = []
    for frame in video["annotations"]:
        stem = os.path.splitext(frame["file_name"])[0]
        candidates = [Path(image_dir) / vid / (stem + ext) for ext in (".jpg", ".png", ".jpeg")]
        image_path = next((p for p in candidates if p.is_file()), None)
        if image_path is None:
            raise FileNotFoundError(f"video {vid!r}: frame {stem} not found under {Path(image_dir) / vid}")
        rgb = np.asarray(Image.open(image_path).convert("RGB"))
        ids = read_id_png(os.path.join(pred_dir, vid, frame["file_name"]), vid, "prediction")
        s = scale or max(1, -(-256 // min(rgb.shape[:2])))
        frames.append(draw_panoptic_frame(rgb, ids, frame["segments_info"], by_id, scale=s))
    return vid, frames

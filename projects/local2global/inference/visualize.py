"""Drawing tracked instances: one stable colour per track id, class name and score.

Colours are a deterministic function of the track id (golden-ratio hue stepping), so a track keeps its colour
for the whole video and across runs.
"""

from __future__ import annotations

import colorsys
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from local2global.modeling.postprocessing.video_instances import FrameInstances

__all__ = ["track_color", "draw_frame_instances"]

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895
_MASK_ALPHA = 0.5


def track_color(track_id: int) -> Tuple[int, int, int]:
    """A bright RGB colour that depends only on ``track_id``."""
    hue = (0.11 + track_id * _GOLDEN_RATIO_CONJUGATE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_frame_instances(frame_rgb: np.ndarray, inst: FrameInstances,
                         class_names: Optional[Sequence[str]] = None, scale: int = 1) -> np.ndarray:
    """Overlay masks, contours and ``class score #track`` labels on an ``H×W×3`` uint8 RGB frame.

    Args:
        scale: integer upscaling (nearest neighbour) of frame and masks before drawing, so that labels stay
            legible on small frames (the synthetic data is 64×96).
    """
    masks = inst.masks.cpu().numpy().astype(bool)
    if scale > 1:
        frame_rgb = np.repeat(np.repeat(frame_rgb, scale, axis=0), scale, axis=1)
        masks = np.repeat(np.repeat(masks, scale, axis=1), scale, axis=2)
    out = frame_rgb.astype(np.float32).copy()
    labels_text = []
    for i, tid in enumerate(inst.track_ids.tolist()):
        color = np.array(track_color(tid), dtype=np.float32)
        m = masks[i]
        if m.any():
            out[m] = out[m] * (1 - _MASK_ALPHA) + color * _MASK_ALPHA
        label = int(inst.labels[i])
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        labels_text.append((m, f"{name} {float(inst.scores[i]):.2f} #{tid}", tuple(int(c) for c in color)))
    canvas = np.clip(out, 0, 255).astype(np.uint8)
    scale = max(0.3, min(canvas.shape[:2]) / 400.0)
    for m, text, color in labels_text:
        if not m.any():
            continue
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, color, max(1, scale // 2))
        ys, xs = np.nonzero(m)
        org = (int(xs.min()), max(int(ys.min()) - 2, 8))
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, color, 1, cv2.LINE_AA)
    return canvas

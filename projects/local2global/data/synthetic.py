"""The built-in synthetic YouTube-VIS dataset: textured moving shapes that cross, occlude, enter and leave.

:func:`make_synthetic_vis` writes a dataset in exact YouTube-VIS format::

    <root>/train/JPEGImages/<video_name>/00000.jpg ...
    <root>/valid/JPEGImages/<video_name>/00000.jpg ...
    <root>/train.json        videos + annotations + categories (masks as uncompressed RLE by default)
    <root>/valid.json        the same for the held-out videos (with ground truth, so they can be scored)
    <root>/train_tags.json / valid_tags.json   per-video tags (sidecar, see below)
    <root>/synthetic_vis.stamp.json   the generation parameters, written last (completion stamp)

Content, per video: a textured background (a smooth random colour field plus fixed fine-grained noise and
a little per-frame noise) and 1..4 objects of three classes, each with a class-specific shape and texture:

* ``striped_disk``: a disk with stripes,
* ``checkered_square``: a square with a checkerboard,
* ``dotted_triangle``: an equilateral triangle with dots,

in random colours. Objects move on straight lines that reflect at an extended border (so they leave the
frame and come back), rotate slowly and change scale; each video's first two objects pass through the
same point at the same time (they cross), and the last object of a multi-object video starts outside the
frame (it enters). Objects are painted in a per-video depth order; each object's mask is its *visible*
part (pixels hidden by nearer objects excluded). A frame where a track has no visible pixel has a ``null``
segmentation, ``null`` area and ``null`` box, as in the official files.

Tags (:data:`TAG_DEFINITIONS`): every video is tagged with the events that its ground truth actually contains
(``crossing``, ``occlusion``, ``exit_reentry``, ``late_entry``, and the hard mode's ``lookalike_crossing``,
``long_occlusion``, ``camera_jump``, ``long``), measured on the rendered visible masks, the objects' full shapes and
the frames (not taken from what the generator meant to do). They are written to ``<split>_tags.json`` with their
definitions, thresholds and the evidence of each tag (which tracks, which frames); see ``docs/SYNTHETIC.md``.
Writing them changes nothing else: the frames, ``train.json`` / ``valid.json`` and the stamp are the same bytes
with and without the sidecar.

Hard mode (``hard=True``, off by default): on top of each default video (the same draws), some videos get a
same-class look-alike crossing (the two crossing objects share class, colour and size), an occluder that covers an
object completely for 3..6 frames, abrupt camera motion (the whole frame content jumps by a global shift on a few
frames), and a tenth of the videos are made long (:data:`HARD_LONG_LENGTH` frames). The hard mode's own draws
come from a separate seed stream, so it is deterministic by seed too.

Generation is deterministic by seed: the same arguments give byte-identical files. The whole dataset is
written to a temporary sibling folder and renamed into place when complete, so an interrupted run never
leaves a folder that looks complete; :func:`ensure_synthetic_vis` makes it only when missing.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from local2global.data.categories import SYNTHETIC_VIS_CATEGORIES
from local2global.data import stamped_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "SyntheticVISConfig",
    "make_synthetic_vis",
    "ensure_synthetic_vis",
    "is_complete",
    "read_stamp",
    "STAMP_NAME",
    "MASK_FORMATS",
    "mask_to_uncompressed_rle",
    "mask_to_polygons",
    "TAG_NAMES",
    "TAG_DEFINITIONS",
    "TAG_THRESHOLDS",
    "tags_path",
    "compute_video_tags",
]

#: Name of the completion stamp (written last; holds the generation parameters).
STAMP_NAME = "synthetic_vis.stamp.json"
#: Version of the generator; part of the stamp, bump when the output changes.
GENERATOR_VERSION = 1
MASK_FORMATS = ("rle", "compressed", "polygon")
SPLITS = ("train", "valid")
#: Suffix of the per-split tags sidecar: ``<root>/<split>_tags.json``.
TAGS_SUFFIX = "_tags.json"
#: Version of the tag definitions (part of the sidecar); bump when a definition or a threshold changes.
TAGS_VERSION = 1

# Seed streams: every draw comes from ``default_rng([seed, split index, stream, ...])``. The default videos use
# streams 0 (lengths) and 1 (per video); the hard mode draws its events from streams of its own, so the default
# draws (and therefore the default files) are untouched by it.
_LENGTHS_STREAM = 0
_VIDEO_STREAM = 1
_HARD_LENGTHS_STREAM = 2
_HARD_VIDEO_STREAM = 3

# ---- hard mode (all sizes are fractions of the frame's shorter side, "unit", unless stated) -----------------
#: Probability that a video with >= 2 objects gets a same-class look-alike crossing (objects 0 and 1, which
#: always cross, get the same class, texture period and size, and nearly the same colours).
HARD_LOOKALIKE_PROB = 0.5
#: Largest per-channel difference (0..255) between the look-alike's colours and those of the object it copies.
HARD_LOOKALIKE_COLOUR_JITTER = 8.0
#: Relative size difference of the look-alike (its base scale is the other's times 1 +- this).
HARD_LOOKALIKE_SCALE_JITTER = 0.1
#: Probability that a video gets an extra occluder that covers one object completely for several frames.
HARD_OCCLUSION_PROB = 0.5
#: Range (inclusive) of the number of consecutive frames the occluder covers its target.
HARD_OCCLUSION_FRAMES = (3, 6)
#: Occluder's inradius / its target's circumradius (> 1: the target is hidden completely, rotation included).
HARD_OCCLUDER_MARGIN = 1.15
#: Classes the occluder is drawn from: disk and square (a triangle's inradius is half its circumradius, so a
#: triangle large enough to hide an object would fill much of the frame).
HARD_OCCLUDER_CLASSES = (0, 1)
#: Range of the occluder's speed relative to its target while it approaches and leaves (unit per frame).
HARD_OCCLUDER_SPEED = (0.04, 0.07)
#: Probability that a video gets abrupt camera motion.
HARD_CAMERA_JUMP_PROB = 0.35
#: Largest number of camera jumps in such a video (1..this, on distinct frames).
HARD_CAMERA_MAX_JUMPS = 2
#: Smallest displacement of one camera jump (unit); the tag's threshold is :data:`CAMERA_JUMP_MIN_SHIFT`.
HARD_CAMERA_JUMP_MIN = 0.2
#: Largest displacement of one camera jump, per axis (unit): below half the frame's shorter side, so that the
#: jump is measurable (a phase-correlation shift is only defined up to half the frame).
HARD_CAMERA_JUMP_MAX = 0.4
#: Largest camera offset from the first frame's view, per axis (unit); the background is extended by reflection.
HARD_CAMERA_MAX_OFFSET = 0.3
#: Bound on the rejection draws of a jump's new offset (never reached with the values above; a clear error if so).
_HARD_CAMERA_MAX_TRIES = 1000
#: Fraction of each split's (non-long) videos that the hard mode makes long (at least one when the split is
#: not empty), and their length (frames); >= :data:`LONG_MIN_FRAMES`, so they carry the ``long`` tag.
HARD_LONG_FRACTION = 0.1
HARD_LONG_LENGTH = 200

# ---- shape geometry, in object units (the object's scale is 1) --------------------------------------------
#: Radius of the largest centred disk inside each class's shape (disk 1, square half-side 0.8, triangle 0.5).
_INRADIUS = {0: 1.0, 1: 0.8, 2: 0.5}
#: Radius of the smallest centred disk holding each class's shape (square: 0.8 * sqrt 2).
_CIRCUMRADIUS = {0: 1.0, 1: 0.8 * math.sqrt(2.0), 2: 1.0}

# ---- tags: definitions and thresholds ---------------------------------------------------------------------
#: A track counts as occluded on a frame when its visible area is below this fraction of its full area (the
#: area of its whole shape inside the frame, hidden parts included), the full area is > 0 and every hidden
#: pixel is covered by another track's visible mask.
OCCLUSION_MAX_VISIBLE = 0.5
#: ``long_occlusion``: at most this fraction visible (the same other conditions) ...
LONG_OCCLUSION_MAX_VISIBLE = 0.1
#: ... on at least this many consecutive frames.
LONG_OCCLUSION_MIN_FRAMES = 3
#: ``crossing``: two tracks' full shapes overlap by at least this fraction of the smaller one's full area on
#: some frame.
CROSSING_MIN_OVERLAP = 0.25
#: ``lookalike_crossing``: a crossing pair of the same class whose mean colours (RGB, 0..255, over all their
#: visible pixels of the rendered frames) are at most this far apart (Euclidean).
LOOKALIKE_MAX_COLOUR_DISTANCE = 30.0
#: ``camera_jump``: the global shift between two consecutive frames, measured by phase correlation of the
#: rendered frames, is at least this long (unit) ...
CAMERA_JUMP_MIN_SHIFT = 0.1
#: ... and explains the change: moving the previous frame by it leaves at most this fraction of the mean absolute
#: difference between the two frames (the whole content moved, not just an object or noise).
CAMERA_JUMP_MAX_RESIDUAL = 0.8
#: ``long``: videos of at least this many frames.
LONG_MIN_FRAMES = 200

#: Tag names, in the order they are listed.
TAG_NAMES = ("crossing", "occlusion", "exit_reentry", "late_entry",
             "lookalike_crossing", "long_occlusion", "camera_jump", "long")
#: The exact definition of each tag (written into the sidecar).
TAG_DEFINITIONS = {
    "crossing": "two tracks whose full shapes (hidden parts included, inside the frame) overlap by >= "
                "crossing_min_overlap of the smaller full area on some frame",
    "occlusion": "a track whose visible area is < occlusion_max_visible of its full area (full area > 0) on >= 1 "
                 "frame, every hidden pixel covered by another track's visible mask (fully hidden included)",
    "exit_reentry": "a track visible, then without any visible pixel for >= 1 frame, at least one of which has "
                    "its whole shape outside the frame, then visible again",
    "late_entry": "a track whose first visible frame is > 0",
    "lookalike_crossing": "a crossing pair of the same class whose mean colours over their visible pixels are "
                          "<= lookalike_max_colour_distance apart (RGB, 0..255)",
    "long_occlusion": "a track with <= long_occlusion_max_visible of its full area visible (full area > 0, hidden "
                      "pixels covered by other tracks) on >= long_occlusion_min_frames consecutive frames",
    "camera_jump": "two consecutive frames whose global shift (peak of the phase correlation of the frames) is >= "
                   "camera_jump_min_shift x min(height, width) pixels and moving the first frame by it leaves <= "
                   "camera_jump_max_residual of their mean absolute difference",
    "long": "a video of >= long_min_frames frames",
}
#: The thresholds named in :data:`TAG_DEFINITIONS` (written into the sidecar).
TAG_THRESHOLDS = {
    "occlusion_max_visible": OCCLUSION_MAX_VISIBLE,
    "long_occlusion_max_visible": LONG_OCCLUSION_MAX_VISIBLE,
    "long_occlusion_min_frames": LONG_OCCLUSION_MIN_FRAMES,
    "crossing_min_overlap": CROSSING_MIN_OVERLAP,
    "lookalike_max_colour_distance": LOOKALIKE_MAX_COLOUR_DISTANCE,
    "camera_jump_min_shift": CAMERA_JUMP_MIN_SHIFT,
    "camera_jump_max_residual": CAMERA_JUMP_MAX_RESIDUAL,
    "long_min_frames": LONG_MIN_FRAMES,
}


@dataclass(frozen=True)
class SyntheticVISConfig:
    """Generation parameters (all of them go into the completion stamp).

    Attributes:
        seed: master seed; each video draws from its own stream derived from ``(seed, split, index)``.
        num_train / num_valid: number of videos per split.
        height / width: frame size in pixels.
        min_length / max_length: range of video lengths (uniform, inclusive).
        num_long: number of extra long train videos; ``long_length``: their length.
        max_objects: objects per video are drawn from ``1..max_objects``.
        mask_format: ``"rle"`` (uncompressed RLE, like the official training files), ``"compressed"``
            (compressed RLE, string counts) or ``"polygon"`` (COCO polygons from the mask contours; areas and
            boxes are then those of the rasterised polygons).
        jpeg_quality: JPEG quality of the frames.
        hard: add the hard mode's events (look-alike crossings, long occlusions, camera jumps, long videos; see
            the module docstring). Off by default; the stamp of a default dataset does not name it, so
            that it stays what it was before the option existed.
    """

    seed: int = 0
    # 320 training videos: with 32 the tiny demo model overfits (measured: AP 62.7 on its training videos,
    # 13.3 on held-out ones); 24 held-out videos (~50 tracks) make the AP of `make demo` a steadier estimate.
    num_train: int = 320
    num_valid: int = 24
    height: int = 64
    width: int = 96
    min_length: int = 8
    max_length: int = 40
    num_long: int = 2
    long_length: int = 120
    max_objects: int = 4
    mask_format: str = "rle"
    jpeg_quality: int = 90
    hard: bool = False

    def validate(self) -> None:
        if self.mask_format not in MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {self.mask_format!r}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"frames must be at least 16x16, got {self.height}x{self.width}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.num_train < 0 or self.num_valid < 0 or self.num_long < 0 or self.long_length < 1:
            raise ValueError("video counts must be >= 0 and long_length >= 1")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if not isinstance(self.hard, bool):
            raise ValueError(f"hard must be a bool, got {self.hard!r}")

    def stamp_config(self) -> dict:
        """The parameters as written into the stamp: all fields, except ``hard`` when it is off (the stamp of a
        default dataset is then byte-identical to the one written before the hard mode existed)."""
        cfg = asdict(self)
        if not self.hard:
            del cfg["hard"]
        return cfg


# ----------------------------------------------------------------------------------------------------------
# Mask encodings
# ----------------------------------------------------------------------------------------------------------
def mask_to_uncompressed_rle(mask: np.ndarray) -> dict:
    """``(H, W)`` bool mask -> uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}`` (column-major runs,
    starting with the number of leading zeros), the official training-file encoding."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def mask_to_compressed_rle(mask: np.ndarray) -> dict:
    """``(H, W)`` bool mask -> compressed RLE with ``str`` counts."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """``(H, W)`` bool mask -> COCO polygons that pycocotools rasterises back to the same mask.

    The outer contours are traced on the mask upsampled 2x (nearest) and mapped back with
    ``(p + 0.5) / 2``: the polygon then runs through every boundary pixel's inner quarter, so even one-pixel
    slivers survive the round trip exactly. Holes are not representable in COCO polygons and are filled.
    """
    big = np.kron(mask.astype(np.uint8), np.ones((2, 2), dtype=np.uint8))
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        if len(pts) >= 3:
            polys.append([float(v) for v in pts.reshape(-1)])
    return polys


def _encode(mask: np.ndarray, fmt: str) -> Tuple[Optional[object], Optional[int], Optional[List[float]]]:
    """Encode one visible mask -> ``(segmentation, area, bbox)``, all ``None`` when nothing is visible."""
    if not mask.any():
        return None, None, None
    h, w = mask.shape
    if fmt == "polygon":
        polys = mask_to_polygons(mask)
        if not polys:
            return None, None, None
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        area = int(mask_utils.area(rle))
        if area == 0:
            return None, None, None
        return polys, area, [float(v) for v in mask_utils.toBbox(rle)]
    crle = mask_to_compressed_rle(mask)
    seg = mask_to_uncompressed_rle(mask) if fmt == "rle" else crle
    return seg, int(mask.sum()), [float(v) for v in mask_utils.toBbox(crle)]


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------
def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold positions into ``[lo, hi]`` by reflection at both ends."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated RGB colour (float, 0..255)."""
    hsv = np.array([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(140, 256)]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


class _Object:
    """One synthetic object: class, colours, and its pose over the whole video."""

    def __init__(self, rng: np.random.Generator, cls: int, length: int, h: int, w: int, unit: float,
                 anchor: Optional[Tuple[float, float, int]], enters: bool):
        self.cls = cls
        self.colour = _random_colour(rng)
        self.texture_colour = np.clip(self.colour * rng.uniform(0.25, 0.55) + rng.uniform(0, 40), 0, 255)
        self.base_scale = rng.uniform(0.13, 0.24) * unit
        t = np.arange(length, dtype=np.float64)
        amp, period, phase = rng.uniform(0.1, 0.35), rng.uniform(12, 40), rng.uniform(0, 2 * np.pi)
        self.scale = self.base_scale * np.exp(amp * np.sin(2 * np.pi * t / period + phase))
        self.angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.06, 0.06) * t
        speed = rng.uniform(0.025, 0.05) * unit
        margin = 1.6 * self.scale.max()
        if enters:
            # start just outside a random border, heading inwards
            side = int(rng.integers(4))
            if side in (0, 1):
                x0 = -margin * 0.95 if side == 0 else w + margin * 0.95
                y0 = rng.uniform(0.25, 0.75) * h
                direction = np.array([1.0 if side == 0 else -1.0, rng.uniform(-0.4, 0.4)])
            else:
                y0 = -margin * 0.95 if side == 2 else h + margin * 0.95
                x0 = rng.uniform(0.25, 0.75) * w
                direction = np.array([rng.uniform(-0.4, 0.4), 1.0 if side == 2 else -1.0])
            direction /= np.linalg.norm(direction)
            cx, cy = x0 + speed * direction[0] * t, y0 + speed * direction[1] * t
        else:
            theta = rng.uniform(0, 2 * np.pi)
            vx, vy = speed * np.cos(theta), speed * np.sin(theta)
            if anchor is not None:
                px, py, tc = anchor
            else:
                px, py, tc = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, int(rng.integers(length))
            cx, cy = px + vx * (t - tc), py + vy * (t - tc)
        self.cx = _reflect(cx, -margin, w + margin)
        self.cy = _reflect(cy, -margin, h + margin)
        self.texture_period = rng.uniform(3.5, 6.0) * unit / 64.0

    def shape_and_texture(self, t: int, xx: np.ndarray, yy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return ``(inside (H, W) bool, texture (H, W) bool)`` at frame ``t``."""
        s, a = self.scale[t], self.angle[t]
        dx, dy = xx - self.cx[t], yy - self.cy[t]
        u = (np.cos(a) * dx + np.sin(a) * dy) / s
        v = (-np.sin(a) * dx + np.cos(a) * dy) / s
        p = self.texture_period / s  # texture period in object units
        if self.cls == 0:  # striped disk
            inside = u * u + v * v <= 1.0
            tex = np.sin(2 * np.pi * u / p) > 0
        elif self.cls == 1:  # checkered square
            inside = np.maximum(np.abs(u), np.abs(v)) <= 0.8
            tex = (np.floor(u / p) + np.floor(v / p)) % 2 == 0
        else:  # dotted triangle (circumradius 1, inradius 0.5)
            inside = np.ones_like(u, dtype=bool)
            for ang in (1.5 * np.pi, np.pi / 6, 5 * np.pi / 6):
                inside &= u * np.cos(ang) + v * np.sin(ang) <= 0.5
            fu, fv = np.mod(u / p, 1.0) - 0.5, np.mod(v / p, 1.0) - 0.5
            tex = fu * fu + fv * fv < 0.09
        return inside, tex


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """``(H, W, 3)`` float32 textured background: smooth colour field + fixed fine noise + faint lines."""
    grey = rng.uniform(60, 190, size=(3, 4, 1))
    coarse = (grey + rng.uniform(-35, 35, size=(3, 4, 3))).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 10, size=(h, w, 1)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang, period = rng.uniform(0, np.pi), rng.uniform(6, 14)
    lines = 10 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)[..., None]
    return np.clip(field + fine + lines, 0, 255)


def _make_lookalike(hard_rng: np.random.Generator, original: _Object, copy: _Object) -> None:
    """Turn ``copy`` into a look-alike of ``original``: same class, texture period and size, nearly the same colours."""
    copy.cls = original.cls
    jitter = HARD_LOOKALIKE_COLOUR_JITTER
    copy.colour = np.clip(original.colour + hard_rng.uniform(-jitter, jitter, size=3), 0, 255).astype(np.float32)
    copy.texture_colour = np.clip(original.texture_colour + hard_rng.uniform(-jitter, jitter, size=3), 0, 255)
    copy.texture_period = original.texture_period
    size = hard_rng.uniform(1.0 - HARD_LOOKALIKE_SCALE_JITTER, 1.0 + HARD_LOOKALIKE_SCALE_JITTER)
    copy.scale = copy.scale * (original.base_scale * size / copy.base_scale)
    copy.base_scale = original.base_scale * size


def _make_occluder(hard_rng: np.random.Generator, objects: List[_Object], length: int, h: int, w: int,
                   unit: float) -> Optional[_Object]:
    """An extra object that comes over one of ``objects``, hides it completely for a few frames and leaves.

    The target and the window are drawn among those where the target's centre is inside the frame on every
    frame of the window (so that the target is there to be hidden); ``None`` when the video has no such window.
    """
    lo, hi = HARD_OCCLUSION_FRAMES
    k = int(hard_rng.integers(lo, hi + 1))
    k = min(k, length - 2)  # keep a frame before and after the window
    if k < lo:
        return None
    candidates = []
    for j, obj in enumerate(objects):
        inside = (obj.cx >= 0) & (obj.cx < w) & (obj.cy >= 0) & (obj.cy < h)
        for t0 in range(1, length - k):
            if inside[t0:t0 + k].all():
                candidates.append((j, t0))
    if not candidates:
        return None
    j, t0 = candidates[int(hard_rng.integers(len(candidates)))]
    target, t1 = objects[j], t0 + k - 1
    cls = int(HARD_OCCLUDER_CLASSES[int(hard_rng.integers(len(HARD_OCCLUDER_CLASSES)))])
    occ = _Object(hard_rng, cls, length, h, w, unit, None, False)
    need = target.scale[t0:t1 + 1].max() * _CIRCUMRADIUS[target.cls] / _INRADIUS[cls] * HARD_OCCLUDER_MARGIN
    occ.scale = np.full(length, need)
    occ.base_scale = need
    theta = hard_rng.uniform(0, 2 * np.pi)
    speed = hard_rng.uniform(*HARD_OCCLUDER_SPEED) * unit
    t = np.arange(length, dtype=np.float64)
    # relative position: arrives along -direction, sits on the target over [t0, t1], leaves along +direction
    lag = np.where(t < t0, t - t0, np.where(t > t1, t - t1, 0.0))
    occ.cx = target.cx + speed * np.cos(theta) * lag
    occ.cy = target.cy + speed * np.sin(theta) * lag
    return occ


def _camera_shifts(hard_rng: np.random.Generator, length: int, unit: float) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame integer content shifts ``(sx, sy)`` (pixels): constant between jumps, jumping on 1..N frames."""
    sx, sy = np.zeros(length, dtype=np.int64), np.zeros(length, dtype=np.int64)
    if length < 2:
        return sx, sy
    n_jumps = min(int(hard_rng.integers(1, HARD_CAMERA_MAX_JUMPS + 1)), length - 1)
    frames = np.sort(hard_rng.choice(np.arange(1, length), size=n_jumps, replace=False))
    max_off = int(round(HARD_CAMERA_MAX_OFFSET * unit))
    min_jump, max_jump = HARD_CAMERA_JUMP_MIN * unit, HARD_CAMERA_JUMP_MAX * unit
    cur = np.zeros(2, dtype=np.int64)
    for f in frames:
        for _ in range(_HARD_CAMERA_MAX_TRIES):
            new = hard_rng.integers(-max_off, max_off + 1, size=2)
            if np.hypot(*(new - cur)) >= min_jump and np.abs(new - cur).max() <= max_jump:
                break
        else:  # pragma: no cover - impossible with the module's constants
            raise RuntimeError(f"no camera jump of {min_jump:.1f}..{max_jump:.1f} px within +-{max_off} px")
        cur = new
        sx[f:], sy[f:] = cur[0], cur[1]
    return sx, sy


def _render_video(rng: np.random.Generator, length: int, cfg: SyntheticVISConfig,
                  hard_rng: Optional[np.random.Generator] = None):
    """Render one video.

    Args:
        rng: the video's stream (every draw of the default video).
        length: number of frames.
        cfg: generation parameters.
        hard_rng: the video's hard-mode stream; given (hard mode), the video gets its hard events on top of the
            default content, whose draws are unchanged.

    Returns:
        frames: list of ``(H, W, 3)`` uint8 RGB frames;
        tracks: list of ``(class index, [visible (H, W) bool mask] * length)``;
        stats: counters (occluded frames, frames outside the image) for the summary;
        full: per track, the ``[full (H, W) bool shape] * length`` (hidden parts included, inside the frame),
            what the tags measure occlusion and crossing on.
    """
    h, w = cfg.height, cfg.width
    unit = float(min(h, w))
    n_obj = int(rng.integers(1, cfg.max_objects + 1))
    classes = rng.integers(0, len(SYNTHETIC_VIS_CATEGORIES), size=n_obj)
    anchor = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, int(rng.integers(length)))
    objects = []
    for k in range(n_obj):
        enters = n_obj >= 3 and k == n_obj - 1  # objects 0 and 1 cross; the last of 3+ enters the frame
        objects.append(_Object(rng, int(classes[k]), length, h, w, unit, anchor if k < 2 else None, enters))
    depth = rng.permutation(n_obj)  # depth[k]: painting rank of object k (0 = farthest)
    order = [int(k) for k in np.argsort(depth)]
    bg = _background(rng, h, w)
    sx = sy = None
    if hard_rng is not None:
        # each event draws from the hard stream whether or not it happens, so the events are independent
        lookalike = hard_rng.random() < HARD_LOOKALIKE_PROB
        occlude = hard_rng.random() < HARD_OCCLUSION_PROB
        jump = hard_rng.random() < HARD_CAMERA_JUMP_PROB
        if lookalike and n_obj >= 2:
            _make_lookalike(hard_rng, objects[0], objects[1])
        occ = _make_occluder(hard_rng, objects, length, h, w, unit) if occlude else None
        if occ is not None:
            objects.append(occ)
            order.append(len(objects) - 1)  # nearest of all
        if jump:
            sx, sy = _camera_shifts(hard_rng, length, unit)
            for obj in objects:
                obj.cx, obj.cy = obj.cx + sx, obj.cy + sy
            pad = int(np.abs(np.concatenate([sx, sy])).max())
            big_bg = cv2.copyMakeBorder(bg, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    n_all = len(objects)
    masks = [[None] * length for _ in range(n_all)]
    full = [[None] * length for _ in range(n_all)]
    frames = []
    stats = {"occluded_frames": 0, "absent_frames": 0}
    for t in range(length):
        frame_bg = bg
        if sx is not None:  # content shifted by (sx, sy): pixel (y, x) shows background point (y - sy, x - sx)
            frame_bg = big_bg[pad - sy[t]:pad - sy[t] + h, pad - sx[t]:pad - sx[t] + w]
        img = frame_bg + rng.normal(0, 4, size=(h, w, 1)).astype(np.float32)
        shapes = {}
        for k in order:  # far to near
            inside, tex = objects[k].shape_and_texture(t, xx, yy)
            colour = np.where(tex[..., None], objects[k].texture_colour, objects[k].colour)
            img = np.where(inside[..., None], colour, img)
            shapes[k] = inside
        covered = np.zeros((h, w), dtype=bool)
        for k in order[::-1]:  # near to far: visible = shape minus what nearer objects cover
            visible = shapes[k] & ~covered
            if shapes[k].any() and visible.sum() < shapes[k].sum():
                stats["occluded_frames"] += 1
            if not visible.any():
                stats["absent_frames"] += 1
            masks[k][t] = visible
            full[k][t] = shapes[k]
            covered |= shapes[k]
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    tracks = [(objects[k].cls, masks[k]) for k in range(n_all)]
    return frames, tracks, stats, full


# ----------------------------------------------------------------------------------------------------------
# Tags
# ----------------------------------------------------------------------------------------------------------
def _runs(flags: np.ndarray) -> List[Tuple[int, int]]:
    """``[(start, length)]`` of the runs of True in a 1-d bool array."""
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def _camera_jump_frames(frames: Sequence[np.ndarray], unit: float) -> List[dict]:
    """The frames whose content moved as a whole from the previous frame (see ``camera_jump``).

    The global shift of each pair of consecutive frames is the peak of their phase correlation (numpy FFTs of
    the Hann-windowed grey frames, all pairs at once; integer pixels). A pair is a jump when the shift is at least
    :data:`CAMERA_JUMP_MIN_SHIFT` x ``unit`` long and explains the change: the previous frame moved by it differs
    from the frame by at most :data:`CAMERA_JUMP_MAX_RESIDUAL` of the difference without moving it (a peak from
    noise on a still background does not pass).
    """
    if len(frames) < 2:
        return []
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float64)
    length, h, w = grey.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    spectra = np.fft.rfft2((grey - grey.mean(axis=(1, 2), keepdims=True)) * window)
    cross = spectra[1:] * np.conj(spectra[:-1])
    corr = np.fft.irfft2(cross / np.maximum(np.abs(cross), np.finfo(np.float64).tiny), s=(h, w))
    peaks = corr.reshape(length - 1, -1).argmax(-1)
    dys, dxs = np.unravel_index(peaks, (h, w))
    dys = np.where(dys > h // 2, dys - h, dys)  # wrap to signed shifts
    dxs = np.where(dxs > w // 2, dxs - w, dxs)
    out = []
    for t in np.flatnonzero(np.hypot(dxs, dys) >= CAMERA_JUMP_MIN_SHIFT * unit) + 1:
        dx, dy = int(dxs[t - 1]), int(dys[t - 1])
        if abs(dx) >= w or abs(dy) >= h:  # pragma: no cover - the wrap keeps |shift| <= half the frame
            continue
        cur, prev = grey[t], grey[t - 1]
        still = float(np.abs(cur - prev).mean())
        # cur[y, x] vs prev[y - dy, x - dx] over the overlap
        c = cur[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
        p = prev[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        moved = float(np.abs(c - p).mean())
        if moved <= CAMERA_JUMP_MAX_RESIDUAL * still:
            residual = moved / max(still, np.finfo(np.float64).tiny)
            out.append({"frame": int(t), "shift": [dx, dy], "residual": round(residual, 3)})
    return out


def compute_video_tags(frames: Sequence[np.ndarray], visible: np.ndarray, full: np.ndarray,
                       categories: Sequence[int], track_ids: Sequence[int]) -> Tuple[List[str], Dict[str, list]]:
    """Tags of one video, measured on its ground truth (see :data:`TAG_DEFINITIONS` and :data:`TAG_THRESHOLDS`).

    Args:
        frames: the ``T`` rendered ``(H, W, 3)`` uint8 RGB frames.
        visible: ``(N, T, H, W)`` bool, the annotated tracks' visible masks (the ground-truth segmentations).
        full: ``(N, T, H, W)`` bool, the same tracks' full shapes inside the frame (hidden parts included).
        categories: the ``N`` tracks' category ids.
        track_ids: the ``N`` tracks' annotation ids (named in the evidence).

    Returns:
        ``(tags, evidence)``: the tags in :data:`TAG_NAMES` order, and per tag the list of events that make it
        true (tracks, frames and the measured values), so that each tag can be checked against the files.
    """
    n, length = visible.shape[:2]
    unit = float(min(frames[0].shape[:2]))
    evidence: Dict[str, list] = {name: [] for name in TAG_NAMES}
    va = visible.reshape(n, length, -1).sum(-1)
    fa = full.reshape(n, length, -1).sum(-1)
    present = va > 0
    for i in range(n):
        tid = int(track_ids[i])
        seen = np.flatnonzero(present[i])
        if seen.size == 0:
            continue
        if seen[0] > 0:
            evidence["late_entry"].append({"track": tid, "first_visible_frame": int(seen[0])})
        for a, b in zip(seen[:-1], seen[1:]):
            if b - a >= 2 and (fa[i, a + 1:b] == 0).any():
                evidence["exit_reentry"].append({"track": tid, "last_visible_frame": int(a),
                                                 "return_frame": int(b),
                                                 "outside_frames": int((fa[i, a + 1:b] == 0).sum())})
        # occlusion: hidden pixels all covered by other tracks' visible masks
        others = np.zeros_like(visible[i])
        for j in range(n):
            if j != i:
                others |= visible[j]
        hidden = full[i] & ~visible[i]
        covered = ~(hidden & ~others).reshape(length, -1).any(-1)
        frac = np.where(fa[i] > 0, va[i] / np.maximum(fa[i], 1), 1.0)
        occluded = (fa[i] > 0) & covered & (frac < OCCLUSION_MAX_VISIBLE)
        if occluded.any():
            t = int(np.flatnonzero(occluded)[0])
            cover = [int((visible[j, t] & hidden[t]).sum()) if j != i else -1 for j in range(n)]
            evidence["occlusion"].append({"track": tid, "frame": t, "visible_area": int(va[i, t]),
                                          "full_area": int(fa[i, t]),
                                          "occluder": int(track_ids[int(np.argmax(cover))]),
                                          "frames": int(occluded.sum())})
        hidden_long = (fa[i] > 0) & covered & (frac <= LONG_OCCLUSION_MAX_VISIBLE)
        for start, run in _runs(hidden_long):
            if run >= LONG_OCCLUSION_MIN_FRAMES:
                evidence["long_occlusion"].append({"track": tid, "start_frame": start, "frames": run})
    if n >= 2:
        colours = []
        for i in range(n):
            pix = np.concatenate([frames[t][visible[i, t]] for t in range(length)], axis=0)
            colours.append(pix.astype(np.float64).mean(0) if len(pix) else np.full(3, np.nan))
        for i in range(n):
            for j in range(i + 1, n):
                inter = (full[i] & full[j]).reshape(length, -1).sum(-1)
                smaller = np.minimum(fa[i], fa[j])
                ratio = np.where(smaller > 0, inter / np.maximum(smaller, 1), 0.0)
                if not (ratio >= CROSSING_MIN_OVERLAP).any():
                    continue
                t = int(np.argmax(ratio))
                pair = {"tracks": [int(track_ids[i]), int(track_ids[j])], "frame": t,
                        "overlap": round(float(ratio[t]), 3)}
                evidence["crossing"].append(pair)
                dist = float(np.linalg.norm(colours[i] - colours[j]))
                if categories[i] == categories[j] and dist <= LOOKALIKE_MAX_COLOUR_DISTANCE:
                    evidence["lookalike_crossing"].append(dict(pair, colour_distance=round(dist, 2)))
    evidence["camera_jump"] = _camera_jump_frames(frames, unit)
    if length >= LONG_MIN_FRAMES:
        evidence["long"].append({"frames": int(length)})
    tags = [name for name in TAG_NAMES if evidence[name]]
    return tags, {name: evidence[name] for name in tags}


def tags_path(root: str, split: str) -> str:
    """Path of the tags sidecar of ``split`` under ``root``."""
    return os.path.join(root, f"{split}{TAGS_SUFFIX}")


# ----------------------------------------------------------------------------------------------------------
# Dataset writing
# ----------------------------------------------------------------------------------------------------------
def _video_lengths(rng: np.random.Generator, split: str, cfg: SyntheticVISConfig,
                   hard_rng: Optional[np.random.Generator] = None) -> List[int]:
    """Lengths of a split's videos: uniform draws, the train split's long videos last; in the hard mode a
    :data:`HARD_LONG_FRACTION` of the drawn ones (chosen with ``hard_rng``) become :data:`HARD_LONG_LENGTH` long."""
    n = cfg.num_train if split == "train" else cfg.num_valid
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=n).tolist()
    if hard_rng is not None and n:
        n_long = max(1, int(round(HARD_LONG_FRACTION * n)))
        for i in hard_rng.choice(n, size=n_long, replace=False):
            lengths[int(i)] = max(HARD_LONG_LENGTH, cfg.max_length)
    if split == "train":
        lengths += [cfg.long_length] * cfg.num_long
    return [int(x) for x in lengths]


def _tags_document(split: str, cfg: SyntheticVISConfig, tags: Dict[str, List[str]],
                   evidence: Dict[str, dict]) -> dict:
    """The sidecar's content: tags per video id, their definitions, thresholds, counts and evidence."""
    counts = {name: sum(name in t for t in tags.values()) for name in TAG_NAMES}
    return {
        "tags_version": TAGS_VERSION, "split": split, "hard": cfg.hard, "num_videos": len(tags),
        "definitions": TAG_DEFINITIONS, "thresholds": TAG_THRESHOLDS, "counts": counts,
        "videos": tags, "evidence": evidence,
    }


def _write_split(tmp_root: str, split: str, cfg: SyntheticVISConfig, split_seed: int,
                 write_tags: bool = True) -> Dict[str, int]:
    """Render and write one split under ``tmp_root`` (and its tags sidecar if ``write_tags``); return its
    statistics."""
    hard_lengths_rng = np.random.default_rng([cfg.seed, split_seed, _HARD_LENGTHS_STREAM]) if cfg.hard else None
    lengths = _video_lengths(np.random.default_rng([cfg.seed, split_seed, _LENGTHS_STREAM]), split, cfg,
                             hard_lengths_rng)
    image_dir = os.path.join(tmp_root, split, "JPEGImages")
    videos, annotations = [], []
    video_tags: Dict[str, List[str]] = {}
    video_evidence: Dict[str, dict] = {}
    stats = {"videos": 0, "frames": 0, "tracks": 0, "occluded_frames": 0, "absent_frames": 0}
    encode_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.jpeg_quality)]
    for vi, length in enumerate(lengths):
        rng = np.random.default_rng([cfg.seed, split_seed, _VIDEO_STREAM, vi])
        hard_rng = np.random.default_rng([cfg.seed, split_seed, _HARD_VIDEO_STREAM, vi]) if cfg.hard else None
        name = f"{split}_{vi:04d}"
        frames, tracks, vstats, full = _render_video(rng, length, cfg, hard_rng)
        os.makedirs(os.path.join(image_dir, name))
        file_names = []
        for t, frame in enumerate(frames):
            rel = f"{name}/{t:05d}.jpg"
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), encode_params)
            if not ok:  # pragma: no cover - OpenCV failure
                raise RuntimeError(f"could not JPEG-encode frame {rel}")
            with open(os.path.join(image_dir, rel), "wb") as f:
                f.write(buf.tobytes())
            file_names.append(rel)
        video_id = vi + 1
        videos.append({
            "id": video_id, "width": cfg.width, "height": cfg.height, "length": length,
            "file_names": file_names, "license": 1, "flickr_url": "", "coco_url": "", "date_captured": "",
        })
        annotated = []  # (track index, annotation id) of the tracks written
        for k, (cls, masks) in enumerate(tracks):
            encoded = [_encode(m, cfg.mask_format) for m in masks]
            if all(seg is None for seg, _, _ in encoded):
                continue  # never visible in this video
            annotations.append({
                "id": len(annotations) + 1, "video_id": video_id,
                "category_id": SYNTHETIC_VIS_CATEGORIES[cls]["id"], "iscrowd": 0,
                "height": cfg.height, "width": cfg.width, "length": length,
                "segmentations": [e[0] for e in encoded],
                "areas": [e[1] for e in encoded],
                "bboxes": [e[2] for e in encoded],
            })
            annotated.append((k, annotations[-1]["id"]))
        if write_tags:
            shape = (len(annotated), length, cfg.height, cfg.width)
            visible = np.array([tracks[k][1] for k, _ in annotated], dtype=bool).reshape(shape)
            shapes = np.array([full[k] for k, _ in annotated], dtype=bool).reshape(shape)
            cats = [SYNTHETIC_VIS_CATEGORIES[tracks[k][0]]["id"] for k, _ in annotated]
            tags, evidence = compute_video_tags(frames, visible, shapes, cats, [a for _, a in annotated])
            video_tags[str(video_id)], video_evidence[str(video_id)] = tags, evidence
        stats["videos"] += 1
        stats["frames"] += length
        stats["occluded_frames"] += vstats["occluded_frames"]
        stats["absent_frames"] += vstats["absent_frames"]
    stats["tracks"] = len(annotations)
    data = {
        "info": {"description": f"Local2Global synthetic VIS ({split})", "version": str(GENERATOR_VERSION),
                 "year": 2024, "contributor": "local2global", "date_created": ""},
        "licenses": [{"id": 1, "name": "CC0", "url": ""}],
        "videos": videos,
        "categories": [{"supercategory": "shape", "id": c["id"], "name": c["name"]} for c in SYNTHETIC_VIS_CATEGORIES],
        "annotations": annotations,
    }
    with open(os.path.join(tmp_root, f"{split}.json"), "w") as f:
        json.dump(data, f, separators=(",", ":"))
    if write_tags:
        doc = _tags_document(split, cfg, video_tags, video_evidence)
        with open(tags_path(tmp_root, split), "w") as f:
            json.dump(doc, f, indent=1)
        logger.info("%s: tag counts over %d videos: %s", split, len(video_tags), doc["counts"])
    return stats


def read_stamp(root: str) -> Optional[dict]:
    """The completion stamp of ``root`` (``None`` if the dataset there is missing or incomplete)."""
    return stamped_dataset.read_stamp(root, STAMP_NAME)


def is_complete(root: str) -> bool:
    """Whether ``root`` holds a complete synthetic dataset (stamp present, both JSONs present)."""
    return read_stamp(root) is not None and all(
        os.path.isfile(os.path.join(root, f"{s}.json")) for s in SPLITS
    )


def make_synthetic_vis(root: str, overwrite: bool = False, write_tags: bool = True, **kwargs) -> dict:
    """Generate the synthetic dataset at ``root`` (see the module docstring for the layout).

    Args:
        root: output folder; must not exist unless ``overwrite`` (then an existing folder is replaced,
            but only once the new dataset is complete).
        overwrite: replace an existing ``root``.
        write_tags: also write the tags sidecars ``<root>/<split>_tags.json`` (the other files are the same
            bytes either way).
        **kwargs: fields of :class:`SyntheticVISConfig` (``seed``, ``num_train``, ``num_valid``, ``height``,
            ``width``, ``min_length``, ``max_length``, ``num_long``, ``long_length``, ``max_objects``,
            ``mask_format``, ``jpeg_quality``, ``hard``).

    Returns:
        The stamp: ``{"generator_version", "config": {...}, "stats": {"train": {...}, "valid": {...}}}``.
    """
    cfg = SyntheticVISConfig(**kwargs)
    cfg.validate()
    root = os.path.abspath(os.fspath(root))

    def write(tmp: str) -> dict:
        return {split: _write_split(tmp, split, cfg, i, write_tags=write_tags) for i, split in enumerate(SPLITS)}

    stamp = stamped_dataset.build_stamped_dataset(root, write, stamp_name=STAMP_NAME, version=GENERATOR_VERSION,
                                                  config=cfg.stamp_config(), overwrite=overwrite,
                                                  what="synthetic dataset")
    stats = stamp["stats"]
    logger.info("wrote synthetic VIS dataset to %s: %s", root, stats)
    return stamp


def ensure_synthetic_vis(root: str, **kwargs) -> str:
    """Make the synthetic dataset at ``root`` unless a complete one is already there; return ``root``.

    Idempotent and safe against interruption (see :func:`make_synthetic_vis`) and against concurrent
    callers (the first to finish wins; the others keep its result).

    Args:
        root: dataset folder.
        **kwargs: generation parameters. Without any, any complete dataset at ``root`` is accepted;
            with some, an existing dataset must have been made with the same values.

    Raises:
        ValueError: ``root`` holds a complete dataset made with different parameters.
        FileExistsError: ``root`` exists but is not a synthetic dataset (it is never deleted).
    """
    return stamped_dataset.ensure_stamped_dataset(root, kwargs, config_cls=SyntheticVISConfig,
                                                  make=make_synthetic_vis, is_complete=is_complete,
                                                  stamp_name=STAMP_NAME, what="synthetic dataset")

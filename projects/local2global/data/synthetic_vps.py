"""The built-in synthetic video panoptic dataset, written in VIPSeg's on-disk format (both layouts).

:func:`make_synthetic_vps` renders videos of textured stuff regions under a panning camera with moving thing objects
over them, and writes them exactly as a downloaded and converted VIPSeg folder looks (``local2global.data.vipseg``)::

    <root>/imgs/<video>/<frame>.jpg               frames (JPEG)
    <root>/panomasks/<video>/<frame>.png          16-bit raw values (VIPSeg's encoding, see below)
    <root>/train.txt, <root>/val.txt              the videos of each split
    <root>/VIPSeg_720P/                           what the project's converter (vipseg_convert) makes of the above:
        images/, panomasks/, panomasksRGB/        (at the frames' own size; frames are copied)
        panoptic_gt_VIPSeg.json, panoptic_gt_VIPSeg_{train,val}.json, panoVIPSeg_categories.json
    <root>/synthetic_vps.stamp.json               the generation parameters, written last (completion stamp)

Raw values follow VIPSeg: ``0`` void, a stuff pixel ``category + 1``, a thing pixel ``(category + 1) * 100 +
instance`` (instances numbered from 0 per category and video). The 720p layout is made from the raw one by
:func:`local2global.data.vipseg_convert.convert_vipseg_to_720p` with :data:`SYNTHETIC_VPS_CATEGORIES`, so it has the
official JSON structure and ids (stuff: the category colour; things: panopticapi's ``IdGenerator`` scheme).

Content, per video (64 x 96 px, 8..40 frames by default):

* **stuff** (:data:`STUFF_CLASSES`): the frame is cut into 2..3 horizontal bands by wavy boundaries, each band one
  stuff class with its own texture and hue range: ``sky`` (a smooth gradient with clouds), ``water`` (waves that
  move over time), ``brick_wall`` (staggered bricks and mortar), ``gravel`` (fine speckle). With probability 1/2 an
  elliptic patch of another stuff class lies inside the scene (it may be a class of a band, which then has two
  disconnected regions: one segment per category and frame, as in VIPSeg). The scene is fixed in world coordinates
  and the camera pans (integer pixels per frame), so stuff moves consistently over the video;
* **void**: the pixels on a band boundary (one pixel wide), VIPSeg's unlabelled pixels;
* **things**: 1..``max_objects`` objects of the synthetic VIS classes (``striped_disk``, ``checkered_square``,
  ``dotted_triangle``), with that generator's shapes, textures and motion (:class:`local2global.data.synthetic._Object`:
  straight lines reflected outside the frame, rotation, scale change; objects 0 and 1 cross, the last of 3+ enters),
  painted over the stuff in a per-video depth order. A thing is listed on the frames where it has visible pixels.

Generation is deterministic by seed: the same arguments give byte-identical files (every draw comes from
``default_rng([seed, split, stream, video])``; the converter's id jitter is seeded by the video name). The dataset is
written to a temporary sibling folder and renamed into place when complete; :func:`ensure_synthetic_vps` makes it
only when missing. Importing this module registers ``synthetic_vps_{train,valid}`` (720p layout, scored by
:class:`~local2global.evaluation.vps.VPSEvaluator`) and ``synthetic_vps_raw_{train,valid}``; loading one generates the
default dataset first if it is missing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from local2global.data import stamped_dataset
from local2global.data.synthetic import _Object  # the VIS generator's moving objects
from local2global.data.vipseg import register_vipseg_panoptic, register_vipseg_raw
from local2global.data.vipseg_categories import RAW_CATEGORY_OFFSET, RAW_INSTANCE_DIVISOR, vipseg_metadata
from local2global.data.vipseg_convert import convert_vipseg_to_720p

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTHETIC_VPS_CATEGORIES",
    "STUFF_CLASSES",
    "THING_CLASSES",
    "SyntheticVPSConfig",
    "make_synthetic_vps",
    "ensure_synthetic_vps",
    "is_complete",
    "read_stamp",
    "synthetic_vps_root",
    "synthetic_vps_metadata",
    "register_synthetic_vps",
    "STAMP_NAME",
    "SPLITS",
]

STAMP_NAME = "synthetic_vps.stamp.json"
#: Version of the generator; part of the stamp, bump when the output changes.
GENERATOR_VERSION = 1
#: Split names of the files (VIPSeg's ``train.txt`` / ``val.txt``); registered as ``synthetic_vps_{train,valid}``.
SPLITS = ("train", "val")
REGISTERED_SPLITS = {"train": "train", "valid": "val"}

#: Stuff classes (category ids 0..3) and thing classes (4..6, the synthetic VIS shapes in their order).
STUFF_CLASSES = ("sky", "water", "brick_wall", "gravel")
THING_CLASSES = ("striped_disk", "checkered_square", "dotted_triangle")
_COLOURS = [(70, 130, 180), (0, 90, 140), (150, 80, 60), (128, 120, 100), (230, 80, 60), (60, 160, 230),
            (90, 200, 90)]
#: VIPSeg-style categories: 0-based ids, ``isthing``, a unique ``color`` (the stuff segments' RGB id).
SYNTHETIC_VPS_CATEGORIES: List[dict] = [
    {"id": i, "name": n, "isthing": int(i >= len(STUFF_CLASSES)), "color": _COLOURS[i]}
    for i, n in enumerate(STUFF_CLASSES + THING_CLASSES)
]

_LENGTHS_STREAM, _VIDEO_STREAM = 0, 1
#: Largest camera pan per frame (pixels; horizontal, vertical).
_PAN_SPEED = (0.6, 0.2)


@dataclass(frozen=True)
class SyntheticVPSConfig:
    """Generation parameters (all of them go into the completion stamp).

    Attributes:
        seed: master seed; each video draws from its own stream derived from ``(seed, split, index)``.
        num_train / num_valid: number of videos per split.
        height / width: frame size in pixels.
        min_length / max_length: range of video lengths (uniform, inclusive).
        max_objects: thing objects per video are drawn from ``1..max_objects``.
        jpeg_quality: JPEG quality of the frames.
    """

    seed: int = 0
    num_train: int = 320
    num_valid: int = 24
    height: int = 64
    width: int = 96
    min_length: int = 8
    max_length: int = 40
    max_objects: int = 4
    jpeg_quality: int = 90

    def validate(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"frames must be at least 16x16, got {self.height}x{self.width}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.num_train < 0 or self.num_valid < 0:
            raise ValueError("video counts must be >= 0")
        if not 1 <= self.max_objects < RAW_INSTANCE_DIVISOR:
            raise ValueError(f"max_objects must be in 1..{RAW_INSTANCE_DIVISOR - 1}, got {self.max_objects}")


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One colour from OpenCV HSV (h 0..180, s / v 0..255) -> float32 RGB ``(3,)``."""
    px = np.array([[[h, s, v]]], dtype=np.float32).clip(0, [179, 255, 255]).astype(np.uint8)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: Tuple[int, int]) -> np.ndarray:
    """``(h, w)`` float32 field in [0, 1]: a coarse uniform grid upsampled bicubically."""
    coarse = rng.random(cells).astype(np.float32)
    return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


class _StuffTextures:
    """The stuff classes' appearance over a video's world canvas.

    Args:
        rng: the video's stream. hc, wc: canvas size (the frame plus the camera's pan).

    ``static(cls)`` is an ``(hc, wc, 3)`` float32 image for every class but water; ``water(ys, xs, t)`` renders the
    waves (which move over time) at world coordinates ``ys, xs`` (``(h, w)`` arrays) on frame ``t``.
    """

    def __init__(self, rng: np.random.Generator, hc: int, wc: int):
        yy, xx = np.mgrid[0:hc, 0:wc].astype(np.float32)
        self._static: Dict[int, np.ndarray] = {}
        # sky: a vertical gradient between two blues, and clouds
        top = _hsv(rng.uniform(98, 112), rng.uniform(90, 160), rng.uniform(200, 250))
        bottom = _hsv(rng.uniform(95, 110), rng.uniform(30, 80), rng.uniform(220, 255))
        a = (yy / max(hc - 1, 1))[..., None]
        clouds = np.clip((_smooth_field(rng, hc, wc, (3, 5)) - 0.5) * 2.5, 0.0, 0.8)[..., None]
        sky = top * (1 - a) + bottom * a
        self._static[0] = sky * (1 - clouds) + 245.0 * clouds
        # water: base colour and wave parameters (rendered per frame)
        self._water_colour = _hsv(rng.uniform(88, 100), rng.uniform(150, 230), rng.uniform(90, 160))
        self._wave = (rng.uniform(3.0, 6.0), rng.uniform(20.0, 40.0), rng.uniform(0.3, 0.8), rng.uniform(0, 2 * np.pi))
        # brick wall: staggered bricks with per-brick brightness, light mortar lines
        bh = rng.uniform(4.0, 7.0)
        bw = bh * rng.uniform(2.0, 3.0)
        row = np.floor(yy / bh)
        xs = xx + (row % 2) * bw / 2
        col = np.floor(xs / bw)
        table = rng.uniform(0.8, 1.2, size=(64, 64)).astype(np.float32)
        shade = table[row.astype(np.int64) % 64, col.astype(np.int64) % 64][..., None]
        brick = _hsv(rng.uniform(0, 15), rng.uniform(120, 200), rng.uniform(110, 180)) * shade
        mortar = ((yy % bh) < 1.0) | ((xs % bw) < 1.0)
        self._static[2] = np.where(mortar[..., None], np.float32(200.0), brick)
        # gravel: a sandy grey with fine speckle and a faint coarse variation
        base = _hsv(rng.uniform(15, 30), rng.uniform(30, 90), rng.uniform(100, 170))
        speckle = rng.normal(0.0, 28.0, size=(hc, wc, 1)).astype(np.float32)
        coarse = (_smooth_field(rng, hc, wc, (4, 6)) - 0.5)[..., None] * 30.0
        self._static[3] = base + speckle + coarse

    def static(self, cls: int) -> Optional[np.ndarray]:
        return self._static.get(cls)

    def water(self, ys: np.ndarray, xs: np.ndarray, t: int) -> np.ndarray:
        period, sway, speed, phase = self._wave
        m = np.sin(2 * np.pi * (ys / period + 0.15 * np.sin(2 * np.pi * xs / sway)) - speed * t + phase)
        return self._water_colour * (1.0 + 0.3 * m[..., None]).astype(np.float32)


def _stuff_layout(rng: np.random.Generator, hc: int, wc: int, unit: float) -> np.ndarray:
    """``(hc, wc)`` int64 world label canvas: the stuff class per pixel, ``-1`` on the band boundaries (void)."""
    yy, xx = np.mgrid[0:hc, 0:wc].astype(np.float64)
    n_bands = int(rng.integers(2, 4))
    classes = rng.choice(len(STUFF_CLASSES), size=n_bands, replace=False)
    spacing = hc / n_bands
    band = np.zeros((hc, wc), dtype=np.int64)
    void = np.zeros((hc, wc), dtype=bool)
    for k in range(1, n_bands):
        base = k * spacing + rng.uniform(-0.2, 0.2) * spacing
        amp, period, phase = rng.uniform(0.5, 0.25 * spacing), rng.uniform(0.5, 1.5) * wc, rng.uniform(0, 2 * np.pi)
        boundary = base + amp * np.sin(2 * np.pi * xx / period + phase)
        band += yy > boundary
        void |= np.abs(yy - boundary) < 0.5
    label = classes[band]
    if rng.random() < 0.5:  # an elliptic patch of another stuff class
        cy, cx = rng.uniform(0, hc), rng.uniform(0, wc)
        ry, rx = rng.uniform(0.1, 0.25) * unit, rng.uniform(0.1, 0.3) * unit
        under = int(label[min(int(cy), hc - 1), min(int(cx), wc - 1)])
        patch_cls = int(rng.choice([c for c in range(len(STUFF_CLASSES)) if c != under]))
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        label = np.where(inside, patch_cls, label)
        void &= ~inside
    return np.where(void, -1, label)


def _pan_offsets(rng: np.random.Generator, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame integer camera offsets ``(oy, ox)`` into the world canvas (both >= 0)."""
    t = np.arange(length, dtype=np.float64)
    vy, vx = rng.uniform(-_PAN_SPEED[1], _PAN_SPEED[1]), rng.uniform(-_PAN_SPEED[0], _PAN_SPEED[0])
    oy, ox = np.round(vy * t).astype(np.int64), np.round(vx * t).astype(np.int64)
    return oy - oy.min(), ox - ox.min()


def render_vps_video(rng: np.random.Generator, length: int, cfg: SyntheticVPSConfig
                     ) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Render one video.

    Args:
        rng: the video's stream (every draw). length: number of frames T. cfg: generation parameters.

    Returns:
        ``(frames, raw)``: ``T`` uint8 RGB frames ``(H, W, 3)`` and ``T`` uint16 raw panomasks ``(H, W)`` in
        VIPSeg's encoding (0 void, stuff ``c + 1``, things ``(c + 1) * 100 + instance``).
    """
    h, w = cfg.height, cfg.width
    unit = float(min(h, w))
    oy, ox = _pan_offsets(rng, length)
    hc, wc = h + int(oy.max()), w + int(ox.max())
    label = _stuff_layout(rng, hc, wc, unit)
    textures = _StuffTextures(rng, hc, wc)
    n_obj = int(rng.integers(1, cfg.max_objects + 1))
    thing_cls = rng.integers(0, len(THING_CLASSES), size=n_obj)
    anchor = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, int(rng.integers(length)))
    objects = [_Object(rng, int(thing_cls[k]), length, h, w, unit, anchor if k < 2 else None,
                       n_obj >= 3 and k == n_obj - 1) for k in range(n_obj)]
    counts: Dict[int, int] = {}
    raw_ids = []
    for obj in objects:  # VIPSeg's instance numbers: from 0 per category
        cat = len(STUFF_CLASSES) + obj.cls
        raw_ids.append((cat + RAW_CATEGORY_OFFSET) * RAW_INSTANCE_DIVISOR + counts.get(cat, 0))
        counts[cat] = counts.get(cat, 0) + 1
    order = [int(k) for k in np.argsort(rng.permutation(n_obj))]  # far to near
    # world colours: the static textures; void pixels show the band below them
    below = label.copy()
    for y in range(hc - 2, -1, -1):
        below[y] = np.where(below[y] < 0, below[y + 1], below[y])
    below = np.where(below < 0, label.max(), below)
    world = np.zeros((hc, wc, 3), dtype=np.float32)
    for c in range(len(STUFF_CLASSES)):
        tex = textures.static(c)
        if tex is not None:
            world = np.where((below == c)[..., None], tex, world)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames, raws = [], []
    for t in range(length):
        win = (slice(int(oy[t]), int(oy[t]) + h), slice(int(ox[t]), int(ox[t]) + w))
        lab, shown = label[win], below[win]
        img = world[win].copy()
        water = shown == 1
        if water.any():
            img = np.where(water[..., None], textures.water(yy + oy[t], xx + ox[t], t), img)
        img += rng.normal(0, 3, size=(h, w, 1)).astype(np.float32)
        raw = np.where(lab < 0, 0, lab + RAW_CATEGORY_OFFSET).astype(np.uint16)
        for k in order:
            inside, tex = objects[k].shape_and_texture(t, xx, yy)
            colour = np.where(tex[..., None], objects[k].texture_colour, objects[k].colour)
            img = np.where(inside[..., None], colour, img)
            raw[inside] = raw_ids[k]
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        raws.append(raw)
    return frames, raws


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------
def _write_raw_split(tmp_root: str, split_index: int, cfg: SyntheticVPSConfig) -> Dict[str, int]:
    """Render one split's videos into the raw layout under ``tmp_root``; return its statistics."""
    split = SPLITS[split_index]
    n = cfg.num_train if split == "train" else cfg.num_valid
    lengths = np.random.default_rng([cfg.seed, split_index, _LENGTHS_STREAM]).integers(
        cfg.min_length, cfg.max_length + 1, size=n)
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.jpeg_quality)]
    names, stats = [], {"videos": 0, "frames": 0, "void_pixels": 0, "pixels": 0}
    for vi, length in enumerate(lengths.tolist()):
        name = f"{split}_{vi:04d}"
        frames, raws = render_vps_video(np.random.default_rng([cfg.seed, split_index, _VIDEO_STREAM, vi]),
                                        int(length), cfg)
        img_dir, mask_dir = os.path.join(tmp_root, "imgs", name), os.path.join(tmp_root, "panomasks", name)
        os.makedirs(img_dir)
        os.makedirs(mask_dir)
        for t, (frame, raw) in enumerate(zip(frames, raws)):
            stem = f"{t:08d}"
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
            if not ok:  # pragma: no cover - OpenCV failure
                raise RuntimeError(f"could not JPEG-encode frame {t} of {name}")
            with open(os.path.join(img_dir, stem + ".jpg"), "wb") as f:
                f.write(buf.tobytes())
            Image.fromarray(raw).save(os.path.join(mask_dir, stem + ".png"))
            stats["void_pixels"] += int((raw == 0).sum())
        names.append(name)
        stats["videos"] += 1
        stats["frames"] += int(length)
    stats["pixels"] = stats["frames"] * cfg.height * cfg.width
    with open(os.path.join(tmp_root, f"{split}.txt"), "w") as f:
        f.write("".join(f"{v}\n" for v in names))
    return stats


def read_stamp(root: str) -> Optional[dict]:
    """The completion stamp of ``root`` (``None`` if the dataset there is missing or incomplete)."""
    return stamped_dataset.read_stamp(root, STAMP_NAME)


def is_complete(root: str) -> bool:
    """Whether ``root`` holds a complete synthetic VPS dataset (stamp and both split JSONs present)."""
    return read_stamp(root) is not None and all(
        os.path.isfile(os.path.join(root, "VIPSeg_720P", f"panoptic_gt_VIPSeg_{s}.json")) for s in SPLITS)


def make_synthetic_vps(root: str, overwrite: bool = False, **kwargs) -> dict:
    """Generate the synthetic VPS dataset at ``root`` (layout in the module docstring).

    Args:
        root: output folder; must not exist unless ``overwrite`` (an existing one is replaced once the new dataset
            is complete).
        **kwargs: fields of :class:`SyntheticVPSConfig`.

    Returns:
        The stamp: ``{"generator_version", "config": {...}, "stats": {"train": {...}, "val": {...}}}``.
    """
    cfg = SyntheticVPSConfig(**kwargs)
    cfg.validate()

    def write(tmp: str) -> dict:
        stats = {split: _write_raw_split(tmp, i, cfg) for i, split in enumerate(SPLITS)}
        written = convert_vipseg_to_720p(tmp, os.path.join(tmp, "VIPSeg_720P"), target_height=cfg.height,
                                         categories=SYNTHETIC_VPS_CATEGORIES)
        for split in SPLITS:  # a split without videos still gets its (empty) JSON, so the layout is complete
            if split not in written:
                with open(os.path.join(tmp, "VIPSeg_720P", f"panoptic_gt_VIPSeg_{split}.json"), "w") as f:
                    json.dump({"videos": [], "annotations": [],
                               "categories": [dict(c, color=list(c["color"])) for c in SYNTHETIC_VPS_CATEGORIES]}, f)
        return stats

    stamp = stamped_dataset.build_stamped_dataset(root, write, stamp_name=STAMP_NAME, version=GENERATOR_VERSION,
                                                  config=asdict(cfg), overwrite=overwrite,
                                                  what="synthetic VPS dataset")
    stats = stamp["stats"]
    logger.info("wrote synthetic VPS dataset to %s: %s", root, stats)
    return stamp


def ensure_synthetic_vps(root: str, **kwargs) -> str:
    """Make the synthetic VPS dataset at ``root`` unless a complete one is already there; return ``root``.

    Args:
        root: dataset folder.
        **kwargs: generation parameters. Without any, any complete dataset at ``root`` is accepted; with some, an
            existing dataset must have been made with the same values.

    Raises:
        ValueError: ``root`` holds a complete dataset made with different parameters.
        FileExistsError: ``root`` exists but is not a synthetic VPS dataset (it is never deleted).
    """
    return stamped_dataset.ensure_stamped_dataset(root, kwargs, config_cls=SyntheticVPSConfig,
                                                  make=make_synthetic_vps, is_complete=is_complete,
                                                  stamp_name=STAMP_NAME, what="synthetic VPS dataset")


# ----------------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------------
def synthetic_vps_root(root: Optional[str] = None) -> str:
    """``$L2G_SYNTHETIC_VPS_ROOT`` when set, else ``<root or $DETECTRON2_DATASETS or datasets>/synthetic_vps``."""
    env = os.environ.get("L2G_SYNTHETIC_VPS_ROOT")
    if env:
        return env
    base = root if root is not None else os.environ.get("DETECTRON2_DATASETS", "datasets")
    return os.path.join(base, "synthetic_vps")


def synthetic_vps_metadata() -> Dict[str, object]:
    """detectron2 panoptic metadata of :data:`SYNTHETIC_VPS_CATEGORIES` (contiguous ids = category ids)."""
    return vipseg_metadata(SYNTHETIC_VPS_CATEGORIES)


def register_synthetic_vps(root: Optional[str] = None) -> List[str]:
    """(Re-)register ``synthetic_vps_{train,valid}`` (720p layout) and ``synthetic_vps_raw_{train,valid}`` at
    ``root`` (default :func:`synthetic_vps_root`); loading one makes the default dataset there if it is missing."""
    root = os.path.abspath(root if root is not None else synthetic_vps_root())
    p720 = os.path.join(root, "VIPSeg_720P")
    names = []
    for name, split in REGISTERED_SPLITS.items():
        meta = dict(synthetic_vps_metadata(), synthetic_root=root)
        register_vipseg_panoptic(f"synthetic_vps_{name}", os.path.join(p720, "images"),
                                 os.path.join(p720, "panomasksRGB"), os.path.join(p720, f"panoptic_gt_VIPSeg_{split}.json"),
                                 metadata=meta, before_load=lambda: ensure_synthetic_vps(root))
        register_vipseg_raw(f"synthetic_vps_raw_{name}", root, split, metadata=meta,
                            before_load=lambda: ensure_synthetic_vps(root))
        names += [f"synthetic_vps_{name}", f"synthetic_vps_raw_{name}"]
    return names


register_synthetic_vps()

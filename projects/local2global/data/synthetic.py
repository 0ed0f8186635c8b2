"""The built-in synthetic YouTube-VIS dataset: textured moving shapes that cross, occlude, enter and leave.

:func:`make_synthetic_vis` writes a dataset in exact YouTube-VIS format::

    <root>/train/JPEGImages/<video_name>/00000.jpg ...
    <root>/valid/JPEGImages/<video_name>/00000.jpg ...
    <root>/train.json        videos + annotations + categories (masks as uncompressed RLE by default)
    <root>/valid.json        the same for the held-out videos (with ground truth, so they can be scored)
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

Generation is deterministic by seed: the same arguments give byte-identical files. The whole dataset is
written to a temporary sibling folder and renamed into place when complete, so an interrupted run never
leaves a folder that looks complete; :func:`ensure_synthetic_vis` makes it only when missing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from local2global.data.categories import SYNTHETIC_VIS_CATEGORIES
from local2global.evaluation.results_io import atomic_write_bytes

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
]

#: Name of the completion stamp (written last; holds the generation parameters).
STAMP_NAME = "synthetic_vis.stamp.json"
#: Version of the generator; part of the stamp, bump when the output changes.
GENERATOR_VERSION = 1
MASK_FORMATS = ("rle", "compressed", "polygon")
SPLITS = ("train", "valid")


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


def _render_video(rng: np.random.Generator, length: int, cfg: SyntheticVISConfig):
    """Render one video.

    Returns:
        frames: list of ``(H, W, 3)`` uint8 RGB frames;
        tracks: list of ``(class index, [visible (H, W) bool mask] * length)``;
        stats: counters (occluded frames, frames outside the image) for the summary.
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
    order = np.argsort(depth)
    bg = _background(rng, h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    masks = [[None] * length for _ in range(n_obj)]
    frames = []
    stats = {"occluded_frames": 0, "absent_frames": 0}
    for t in range(length):
        img = bg + rng.normal(0, 4, size=(h, w, 1)).astype(np.float32)
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
            covered |= shapes[k]
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    tracks = [(objects[k].cls, masks[k]) for k in range(n_obj)]
    return frames, tracks, stats


# ----------------------------------------------------------------------------------------------------------
# Dataset writing
# ----------------------------------------------------------------------------------------------------------
def _video_lengths(rng: np.random.Generator, split: str, cfg: SyntheticVISConfig) -> List[int]:
    n = cfg.num_train if split == "train" else cfg.num_valid
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=n).tolist()
    if split == "train":
        lengths += [cfg.long_length] * cfg.num_long
    return [int(x) for x in lengths]


def _write_split(tmp_root: str, split: str, cfg: SyntheticVISConfig, split_seed: int) -> Dict[str, int]:
    """Render and write one split under ``tmp_root``; return its statistics."""
    lengths = _video_lengths(np.random.default_rng([cfg.seed, split_seed, 0]), split, cfg)
    image_dir = os.path.join(tmp_root, split, "JPEGImages")
    videos, annotations = [], []
    stats = {"videos": 0, "frames": 0, "tracks": 0, "occluded_frames": 0, "absent_frames": 0}
    encode_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.jpeg_quality)]
    for vi, length in enumerate(lengths):
        rng = np.random.default_rng([cfg.seed, split_seed, 1, vi])
        name = f"{split}_{vi:04d}"
        frames, tracks, vstats = _render_video(rng, length, cfg)
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
        for cls, masks in tracks:
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
    return stats


def read_stamp(root: str) -> Optional[dict]:
    """The completion stamp of ``root`` (``None`` if the dataset there is missing or incomplete)."""
    path = os.path.join(root, STAMP_NAME)
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(root: str) -> bool:
    """Whether ``root`` holds a complete synthetic dataset (stamp present, both JSONs present)."""
    return read_stamp(root) is not None and all(
        os.path.isfile(os.path.join(root, f"{s}.json")) for s in SPLITS
    )


def make_synthetic_vis(root: str, overwrite: bool = False, **kwargs) -> dict:
    """Generate the synthetic dataset at ``root`` (see the module docstring for the layout).

    Args:
        root: output folder; must not exist unless ``overwrite`` (then an existing folder is replaced,
            but only once the new dataset is complete).
        overwrite: replace an existing ``root``.
        **kwargs: fields of :class:`SyntheticVISConfig` (``seed``, ``num_train``, ``num_valid``, ``height``,
            ``width``, ``min_length``, ``max_length``, ``num_long``, ``long_length``, ``max_objects``,
            ``mask_format``, ``jpeg_quality``).

    Returns:
        The stamp: ``{"generator_version", "config": {...}, "stats": {"train": {...}, "valid": {...}}}``.
    """
    cfg = SyntheticVISConfig(**kwargs)
    cfg.validate()
    root = os.path.abspath(os.fspath(root))
    if os.path.exists(root) and not overwrite:
        raise FileExistsError(f"synthetic dataset root {root!r} already exists (pass overwrite=True to replace it)")
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.partial-", dir=parent)
    try:
        stats = {split: _write_split(tmp, split, cfg, i) for i, split in enumerate(SPLITS)}
        stamp = {"generator_version": GENERATOR_VERSION, "config": asdict(cfg), "stats": stats}
        atomic_write_bytes(os.path.join(tmp, STAMP_NAME), json.dumps(stamp, sort_keys=True, indent=1).encode())
        os.chmod(tmp, 0o755)
        _move_into_place(tmp, root, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote synthetic VIS dataset to %s: %s", root, stats)
    return stamp


def _move_into_place(tmp: str, root: str, overwrite: bool) -> None:
    """Rename the finished ``tmp`` folder to ``root`` (replacing an old one only when ``overwrite``)."""
    if os.path.exists(root) and overwrite:
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.old-", dir=os.path.dirname(root))
        os.rmdir(old)
        os.rename(root, old)
        os.rename(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        if os.path.exists(root):
            raise FileExistsError(root)
        os.rename(tmp, root)
    except OSError as e:  # another process finished first (rename onto a non-empty folder fails)
        if os.path.exists(root):
            raise FileExistsError(f"synthetic dataset root {root!r} appeared while generating") from e
        raise


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
    root = os.path.abspath(os.fspath(root))
    wanted = asdict(SyntheticVISConfig(**kwargs))
    if not is_complete(root):
        if os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)  # an empty folder (e.g. made by a user) is fine to replace
        elif os.path.exists(root):
            raise FileExistsError(
                f"{root!r} exists but holds no complete synthetic dataset (no {STAMP_NAME}); "
                "remove it or choose another root"
            )
        try:
            make_synthetic_vis(root, **kwargs)
            return root
        except FileExistsError:
            if not is_complete(root):  # someone else created something that is not a dataset
                raise
    have = (read_stamp(root) or {}).get("config", {})
    diff = {k: (have.get(k), v) for k, v in wanted.items() if k in kwargs and have.get(k) != v}
    if diff:
        raise ValueError(
            f"synthetic dataset at {root!r} was made with different parameters "
            f"(existing, requested): {diff}; remove it or choose another root"
        )
    return root

"""COCO images -> T-frame pseudo-video clips (the COCO joint training of SPEC §3, phase 2).

:class:`CocoPseudoVideoMapper` turns one detectron2 COCO instance dict (``load_coco_json`` format:
``file_name``, ``height``, ``width``, ``image_id``, ``annotations`` with ``segmentation`` / ``category_id`` /
``iscrowd``) into the training sample of SPEC §5 (the same output as
:class:`local2global.data.clip_mapper.VideoClipDatasetMapper`):

1. the image is read and the optional ``augmentations`` (e.g. resize / flip) are applied once;
2. two random poses (scale, rotation, translation) are drawn and frame ``i`` warps the image with the pose
   interpolated at ``i / (T - 1)``, so the clip looks like a smooth camera motion (bilinear for the image,
   nearest for the masks, zero outside the image);
3. track ids are the annotation indices; COCO categories are mapped to the target vocabulary through
   ``category_map`` (unmapped ones and crowd annotations are dropped); tracks empty in every frame are dropped.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from detectron2.data import transforms as T

from local2global.data.categories import coco_category_map
from local2global.data.clip_mapper import (
    _decode,
    _default_rng,
    _to_chw_tensor,
    clip_instances,
    read_frame,
    seeded_global_numpy,
    seeded_rng,
)

logger = logging.getLogger(__name__)

__all__ = ["CocoPseudoVideoMapper", "pseudo_clip_affines"]


def pseudo_clip_affines(num_frames: int, src_hw: Tuple[int, int], out_hw: Tuple[int, int], rng: np.random.Generator,
                        scale_range: Tuple[float, float], max_rotation: float, max_translation: float) -> np.ndarray:
    """``(T, 2, 3)`` affine matrices (source pixel -> output pixel) of a smooth random camera motion.

    The base scale makes the source image cover the output; each pose multiplies it by a zoom in
    ``scale_range``, rotates by up to ``max_rotation`` degrees about the centre and shifts by up to
    ``max_translation`` times the output size. Frame ``i`` uses the pose interpolated between two random
    poses at ``i / (T - 1)``.
    """
    (sh, sw), (oh, ow) = src_hw, out_hw
    base = max(oh / sh, ow / sw)
    log_lo, log_hi = np.log(scale_range[0]), np.log(scale_range[1])
    poses = [
        (np.exp(rng.uniform(log_lo, log_hi)), np.deg2rad(rng.uniform(-max_rotation, max_rotation)),
         rng.uniform(-max_translation, max_translation) * ow, rng.uniform(-max_translation, max_translation) * oh)
        for _ in range(2)
    ]
    out = np.zeros((num_frames, 2, 3), dtype=np.float64)
    for i in range(num_frames):
        a = i / (num_frames - 1) if num_frames > 1 else 0.0
        z, th, tx, ty = [(1 - a) * p0 + a * p1 for p0, p1 in zip(*poses)]
        s = base * z
        rot = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        c_src = np.array([(sw - 1) / 2.0, (sh - 1) / 2.0])
        c_out = np.array([(ow - 1) / 2.0 + tx, (oh - 1) / 2.0 + ty])
        out[i, :, :2] = rot
        out[i, :, 2] = c_out - rot @ c_src
    return out


class CocoPseudoVideoMapper:
    """COCO instance dict -> pseudo-video training clip (SPEC §5 training sample).

    Args:
        num_frames: T, frames per clip.
        image_size: output frame size: ``None`` keeps the (augmented) image size, an int is the short side
            (aspect ratio kept), a pair is ``(height, width)``.
        category_map: ``{category id in the dicts: target contiguous id}``, or a target vocabulary name
            (``"ytvis_2019"``, ``"ytvis_2021"``, ``"ytvis_2022"``, ``"ovis"``) resolved with
            :func:`local2global.data.categories.coco_category_map`; ``None`` keeps the dicts' ids (for COCO
            files already converted to the target vocabulary).
        category_id_source: with a vocabulary name: ``"contiguous"`` when the dicts carry detectron2's
            contiguous COCO ids (a registered COCO dataset, the default) or ``"dataset"`` for raw COCO ids.
        augmentations: detectron2 augmentations applied once to the source image.
        scale_range: zoom range of the random poses (relative to covering the output).
        max_rotation: maximum rotation in degrees.
        max_translation: maximum shift as a fraction of the output size.
        image_format: ``"RGB"`` or ``"BGR"``.
        seed: if given, sample ``i`` (in call order) uses
            :func:`~local2global.data.clip_mapper.seeded_rng` ``(seed, i)``.
    """

    def __init__(self, num_frames: int = 4, image_size: Union[None, int, Sequence[int]] = None,
                 category_map: Union[None, str, Dict[int, int]] = None, category_id_source: str = "contiguous",
                 augmentations: Sequence[T.Augmentation] = (), scale_range: Sequence[float] = (0.8, 1.25),
                 max_rotation: float = 10.0, max_translation: float = 0.1, image_format: str = "RGB",
                 seed: Optional[int] = None):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = int(num_frames)
        self.image_size = image_size
        if isinstance(category_map, str):
            category_map = coco_category_map(category_map, category_id_source)
        self.category_map = None if category_map is None else {int(k): int(v) for k, v in category_map.items()}
        self.augmentations = T.AugmentationList(list(augmentations))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.max_rotation = float(max_rotation)
        self.max_translation = float(max_translation)
        self.image_format = image_format
        self.seed = seed
        self._calls = 0

    def _out_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.image_size is None:
            return h, w
        if isinstance(self.image_size, (int, np.integer)):
            s = int(self.image_size) / min(h, w)
            return int(round(h * s)), int(round(w * s))
        oh, ow = self.image_size
        return int(oh), int(ow)

    def _read_image(self, dataset_dict: dict, rng: Optional[np.random.Generator]):
        """Read and augment the source image: ``(image (h, w, 3), transforms, sample_rng, (H0, W0))``.

        The original size ``(H0, W0)`` is the dict's ``height`` / ``width`` (checked against the file) or, for
        dicts without them (detectron2's COCO-panoptic dicts), the file's.
        """
        image_id = dataset_dict.get("image_id", -1)
        expected = (int(dataset_dict["height"]), int(dataset_dict["width"])) if "height" in dataset_dict else None
        with seeded_global_numpy(rng):
            image = read_frame(dataset_dict["file_name"], self.image_format, image_id, expected)
            hw0 = image.shape[:2]
            aug_input = T.AugInput(image)
            transforms = self.augmentations(aug_input)
            image = aug_input.image
            sample_rng = _default_rng(rng)
        return image, transforms, sample_rng, (int(hw0[0]), int(hw0[1]))

    def _targets(self, dataset_dict: dict, transforms, hw0: Tuple[int, int]
                 ) -> Tuple[List[int], List[int], Optional[np.ndarray], Dict[str, torch.Tensor]]:
        """The source image's targets after its augmentation.

        Returns:
            ``(track_ids, classes, masks, extra)``: ``n`` ids and contiguous classes, ``(n, h, w)`` uint8 masks
            (``None`` without targets), and per-target fields to add to every frame's ``Instances``
            (``{field: (n,) tensor}``; none here).
        """
        h0, w0 = hw0
        image_id = dataset_dict.get("image_id", -1)
        track_ids, classes, masks = [], [], []
        for idx, obj in enumerate(dataset_dict.get("annotations") or []):
            if obj.get("iscrowd", 0):
                continue
            cid = int(obj["category_id"])
            if self.category_map is not None:
                if cid not in self.category_map:
                    continue
                cid = self.category_map[cid]
            seg = obj.get("segmentation")
            if not seg:
                continue
            m = _decode(seg, h0, w0)
            if m.shape != (h0, w0):
                raise ValueError(f"image_id {image_id} ({dataset_dict['file_name']!r}), annotation {idx}: mask size "
                                 f"{m.shape} differs from the image size ({h0}, {w0})")
            track_ids.append(idx)
            classes.append(cid)
            masks.append(transforms.apply_segmentation(m))
        return track_ids, classes, np.stack(masks).astype(np.uint8) if masks else None, {}

    def __call__(self, dataset_dict: dict, rng: Optional[np.random.Generator] = None) -> dict:
        if rng is None and self.seed is not None:
            rng = seeded_rng(self.seed, self._calls)
        self._calls += 1
        image, transforms, sample_rng, (h0, w0) = self._read_image(dataset_dict, rng)
        track_ids, classes, src_masks, extra = self._targets(dataset_dict, transforms, (h0, w0))

        h, w = image.shape[:2]
        oh, ow = self._out_size(h, w)
        affines = pseudo_clip_affines(self.num_frames, (h, w), (oh, ow), sample_rng, self.scale_range,
                                      self.max_rotation, self.max_translation)
        images, masks_per_frame = [], []
        if src_masks is None:
            src_masks = np.zeros((0, h, w), dtype=np.uint8)
        for a in affines:
            frame = cv2.warpAffine(image, a, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=0)
            images.append(_to_chw_tensor(frame))
            fm = np.zeros((len(src_masks), oh, ow), dtype=bool)
            for k, m in enumerate(src_masks):
                fm[k] = cv2.warpAffine(m, a, (ow, oh), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                       borderValue=0).astype(bool)
            masks_per_frame.append(fm)

        if track_ids:
            keep = np.stack([m.reshape(len(track_ids), -1).any(axis=1) for m in masks_per_frame]).any(axis=0)
            track_ids = [t for t, k in zip(track_ids, keep) if k]
            classes = [c for c, k in zip(classes, keep) if k]
            masks_per_frame = [m[keep] for m in masks_per_frame]
            extra = {name: values[torch.from_numpy(keep)] for name, values in extra.items()}
        instances = clip_instances((oh, ow), track_ids, classes, masks_per_frame)
        for name, values in extra.items():
            for inst in instances:
                inst.set(name, values.clone())
        return {
            "video_id": dataset_dict.get("image_id", -1),
            "height": h0,
            "width": w0,
            "frame_indices": list(range(self.num_frames)),
            "images": images,
            "instances": instances,
        }

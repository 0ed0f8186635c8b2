"""COCO-panoptic images -> T-frame panoptic pseudo-video clips (VPS phase 1; COCO panoptic mixed into VPS video data).

:class:`CocoPanopticPseudoVideoMapper` turns one detectron2 "standard" COCO-panoptic dict (what
``load_coco_panoptic_json`` returns for ``coco_2017_{train,val}_panoptic``: ``file_name``, ``image_id``,
``pan_seg_file_name`` (the RGB id PNG), ``segments_info`` with ``id``, contiguous ``category_id``, ``iscrowd``,
``isthing``; no ``height`` / ``width``) into the panoptic training clip of
:class:`local2global.data.vps_mapper.VideoPanopticClipMapper`, made from one image the way
:class:`~local2global.data.coco_pseudo_video.CocoPseudoVideoMapper` makes instance clips:

1. the image is read and the ``augmentations`` are applied once (to the image and to the segments' masks);
2. frame ``i`` warps it with a smooth random camera motion (:func:`~local2global.data.coco_pseudo_video.pseudo_clip_affines`);
3. targets are those of a VIPSeg clip: a **thing** segment is one target (its segment id), all **stuff** segments of a
   category are merged into one target with the id ``STUFF_TARGET_ID_OFFSET + category``, crowd segments and
   unlabelled pixels belong to no target; every frame's ``Instances`` carries ``gt_is_thing`` (the criterion's
   panoptic mode: no box loss and no box cost for stuff). Targets empty on every frame after the warp are dropped.

Classes are the dict's contiguous ids (detectron2's 133 COCO-panoptic classes: 80 things then 53 stuff, the order of
MaskDINO's COCO-panoptic class head) unless ``category_map`` maps them to another vocabulary (unmapped segments are
no target).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from local2global.data.coco_pseudo_video import CocoPseudoVideoMapper
from local2global.data.vps_mapper import VideoPanopticClipMapper, panoptic_clip_targets
from local2global.evaluation.vps.panoptic_io import rgb_to_id

logger = logging.getLogger(__name__)

__all__ = ["CocoPanopticPseudoVideoMapper", "read_coco_panoptic_png"]


def read_coco_panoptic_png(path: str, expected_hw: Tuple[int, int], image_id) -> np.ndarray:
    """A COCO-panoptic PNG as an ``(H, W)`` int64 segment-id map (``R + 256 G + 256^2 B``, 0 unlabelled).

    Raises:
        FileNotFoundError / ValueError: the PNG is missing, or its size differs from the image's (both name the
            file and the image id).
    """
    try:
        with Image.open(path) as im:
            ids = rgb_to_id(np.asarray(im.convert("RGB"))).astype(np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"image_id {image_id}: panoptic PNG {path!r} does not exist") from None
    if ids.shape != tuple(expected_hw):
        raise ValueError(f"image_id {image_id}: panoptic PNG {path!r} is {ids.shape[0]}x{ids.shape[1]} but the image "
                         f"is {expected_hw[0]}x{expected_hw[1]}")
    return ids


class CocoPanopticPseudoVideoMapper(CocoPseudoVideoMapper):
    """COCO-panoptic dict -> panoptic pseudo-video training clip (see the module docstring).

    Args:
        num_frames, image_size, augmentations, scale_range, max_rotation, max_translation, image_format, seed: as
            :class:`~local2global.data.coco_pseudo_video.CocoPseudoVideoMapper`.
        category_map: ``{contiguous id of the dicts: target contiguous id}``; ``None`` (default) keeps the dicts'
            ids. (The instance mapper's vocabulary names map COCO things only, so they are not accepted here.)
    """

    def __init__(self, num_frames: int = 4, image_size: Union[None, int, Sequence[int]] = None,
                 category_map: Optional[Dict[int, int]] = None, augmentations=(),
                 scale_range: Sequence[float] = (0.8, 1.25), max_rotation: float = 10.0,
                 max_translation: float = 0.1, image_format: str = "RGB", seed: Optional[int] = None):
        if isinstance(category_map, str):
            raise ValueError("category_map must be a dict (contiguous id -> target id) or None for panoptic data, "
                             f"got the vocabulary name {category_map!r}")
        super().__init__(num_frames=num_frames, image_size=image_size, category_map=category_map,
                         augmentations=augmentations, scale_range=scale_range, max_rotation=max_rotation,
                         max_translation=max_translation, image_format=image_format, seed=seed)

    def _segments(self, dataset_dict: dict) -> List[dict]:
        """The dict's segments with their classes in the target vocabulary (unmapped ones left out)."""
        out = []
        for seg in dataset_dict.get("segments_info") or []:
            cid = int(seg["category_id"])
            if self.category_map is not None:
                if cid not in self.category_map:
                    continue
                cid = self.category_map[cid]
            out.append({"id": int(seg["id"]), "category_id": cid, "isthing": bool(seg["isthing"]),
                        "iscrowd": int(seg.get("iscrowd", 0))})
        return out

    def _targets(self, dataset_dict: dict, transforms, hw0: Tuple[int, int]
                 ) -> Tuple[List[int], List[int], Optional[np.ndarray], Dict[str, torch.Tensor]]:
        """Every non-crowd segment a target, stuff merged per category; masks through the image's augmentation.

        Returns:
            ``(target_ids, classes, masks, {"gt_is_thing": [...]})`` with ``(n, h, w)`` uint8 masks (``None`` without
            targets).
        """
        segments = self._segments(dataset_dict)
        target_ids, category, is_thing = panoptic_clip_targets([segments])
        if not target_ids:
            return [], [], None, {"gt_is_thing": torch.zeros(0, dtype=torch.bool)}
        ids = read_coco_panoptic_png(dataset_dict["pan_seg_file_name"], hw0, dataset_dict.get("image_id", -1))
        pos = {tid: i for i, tid in enumerate(target_ids)}
        index = VideoPanopticClipMapper._index_map(ids, segments, pos)
        masks = VideoPanopticClipMapper._split_masks(index, len(target_ids), transforms).astype(np.uint8)
        return (target_ids, [category[t] for t in target_ids], masks,
                {"gt_is_thing": torch.as_tensor([is_thing[t] for t in target_ids], dtype=torch.bool)})

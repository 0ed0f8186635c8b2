"""VIPSeg training clips: every panoptic segment (thing instance or stuff region) is one target.

:class:`VideoPanopticClipMapper` turns a VIPSeg dataset dict (:mod:`local2global.data.vipseg`, either layout)
into a training clip with the output contract of :class:`~local2global.data.clip_mapper.VideoClipDatasetMapper`
(one dict per clip; per frame an :class:`~detectron2.structures.Instances` listing the same targets in the same
order with ``gt_ids``, ``gt_classes``, ``gt_masks``, ``gt_boxes``, ``gt_valid``) plus one field:

* ``gt_is_thing`` bool ``(n,)``: True for a thing instance, False for a stuff region. The criterion uses it to
  leave stuff out of the box loss and the box matching cost (MaskDINO's panoptic training).

Targets of a clip:

* a **thing** target is one segment id of the dataset dict (the same object keeps its id over the video);
* a **stuff** target is one stuff *category* over the clip: every segment of that category on a frame is merged
  into it (VIPSeg already has one segment per stuff category and frame; other panoptic data may not), with the id
  ``STUFF_TARGET_ID_OFFSET + category``. The offset is above every segment id of either layout (RGB ids are
  below 2^24), so thing and stuff ids never collide and the ids stay fixed over the clip;
* crowd segments and void pixels are no target (their pixels are negatives of every target's mask);
* targets ordered by id (so things first, in id order, then stuff by category); targets empty on every sampled
  frame after augmentation are dropped, as in the instance mapper.

Masks are transformed as one small index map per frame rather than one mask per target: the frame's targets are
numbered 1..n, the ``uint8`` index map goes through the clip's ``TransformList`` (nearest-neighbour, the same
operation ``apply_segmentation`` performs on one binary mask, so the result equals transforming every mask on its
own) and is split into ``n`` masks afterwards; frames with more than :data:`_MAX_INDEX` targets are done in chunks.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from local2global.data.clip_mapper import VideoClipDatasetMapper, clip_instances
from local2global.data.vipseg import read_panoptic_frame

logger = logging.getLogger(__name__)

__all__ = ["VideoPanopticClipMapper", "STUFF_TARGET_ID_OFFSET", "panoptic_clip_targets"]

#: Target id of a stuff category ``c`` is ``STUFF_TARGET_ID_OFFSET + c``: above every RGB segment id (< 2^24) and
#: every raw-layout id, so a stuff target never shares an id with a thing.
STUFF_TARGET_ID_OFFSET = 1 << 24
#: Largest target index one uint8 index map holds (0 is "no target").
_MAX_INDEX = np.iinfo(np.uint8).max


def panoptic_clip_targets(frames_segments: Sequence[Sequence[dict]]) -> Tuple[List[int], Dict[int, int],
                                                                              Dict[int, bool]]:
    """The targets of a clip from its frames' ``segments_info``.

    Args:
        frames_segments: per sampled frame the dataset dict's segments (``id``, ``category_id``, ``isthing``,
            ``iscrowd``).

    Returns:
        ``(target_ids, category, is_thing)``: the sorted target ids, and per target id its contiguous class and
        whether it is a thing. A thing target's class is its segment's class on the first sampled frame that
        lists it.
    """
    category: Dict[int, int] = {}
    is_thing: Dict[int, bool] = {}
    for segments in frames_segments:
        for seg in segments:
            if seg.get("iscrowd", 0):
                continue
            tid = segment_target_id(seg)
            if tid not in category:
                category[tid] = int(seg["category_id"])
                is_thing[tid] = bool(seg["isthing"])
    return sorted(category), category, is_thing


def segment_target_id(seg: dict) -> int:
    """The target id of one (non-crowd) segment: its own id for a thing, the category's stuff id for stuff."""
    if seg["isthing"]:
        return int(seg["id"])
    return STUFF_TARGET_ID_OFFSET + int(seg["category_id"])


class VideoPanopticClipMapper(VideoClipDatasetMapper):
    """VIPSeg dataset dict -> panoptic training clip (see the module docstring for the contract).

    The clip sampling, frame reading, augmentation and seeding are :class:`VideoClipDatasetMapper`'s (same
    arguments); only the targets differ: every segment of the clip's frames, stuff merged per category.
    """

    @staticmethod
    def _index_map(ids: np.ndarray, segments: Sequence[dict], pos: Dict[int, int]) -> np.ndarray:
        """``(H, W)`` int64 map: target index + 1 per pixel (0: void, crowd or a segment of no target)."""
        lut_ids, lut_idx = [0], [0]
        for seg in segments:
            if seg.get("iscrowd", 0):
                continue
            lut_ids.append(int(seg["id"]))
            lut_idx.append(pos[segment_target_id(seg)] + 1)
        lut_ids_arr = np.asarray(lut_ids, dtype=np.int64)
        order = np.argsort(lut_ids_arr, kind="stable")
        sorted_ids, sorted_idx = lut_ids_arr[order], np.asarray(lut_idx, dtype=np.int64)[order]
        where = np.searchsorted(sorted_ids, ids)
        where = np.clip(where, 0, len(sorted_ids) - 1)
        hit = sorted_ids[where] == ids
        return np.where(hit, sorted_idx[where], 0)

    @staticmethod
    def _split_masks(index: np.ndarray, num_targets: int, transforms) -> np.ndarray:
        """Transform an index map chunk by chunk and split it into ``(n, h, w)`` bool masks."""
        masks = None
        for base in range(0, num_targets, _MAX_INDEX):
            count = min(_MAX_INDEX, num_targets - base)
            in_chunk = (index > base) & (index <= base + count)
            chunk = np.where(in_chunk, index - base, 0).astype(np.uint8)
            out = transforms.apply_segmentation(chunk)
            if masks is None:
                masks = np.zeros((num_targets, *out.shape), dtype=bool)
            masks[base:base + count] = out[None] == np.arange(1, count + 1, dtype=np.uint8)[:, None, None]
        return masks

    def __call__(self, dataset_dict: dict, rng: Optional[np.random.Generator] = None) -> dict:
        rng = self._next_rng(rng)
        frame_indices = self._sample_clip(dataset_dict, rng)
        segments = {t: dataset_dict["annotations"][t] for t in frame_indices}
        target_ids, category, is_thing = panoptic_clip_targets([segments[t] for t in frame_indices])
        pos = {tid: i for i, tid in enumerate(target_ids)}

        def frame_masks(t, transforms, hw):
            index = self._index_map(read_panoptic_frame(dataset_dict, t), segments[t], pos)
            return self._split_masks(index, len(target_ids), transforms)

        images, masks_per_frame = self._read_clip(dataset_dict, frame_indices, len(target_ids), frame_masks, rng)
        target_ids, masks_per_frame = self._drop_empty_targets(target_ids, masks_per_frame)
        image_size = tuple(images[0].shape[-2:])
        instances = clip_instances(image_size, target_ids, [category[tid] for tid in target_ids], masks_per_frame)
        thing_flags = torch.as_tensor([is_thing[tid] for tid in target_ids], dtype=torch.bool)
        for inst in instances:
            inst.gt_is_thing = thing_flags.clone()
        return {
            "video_id": dataset_dict["video_id"],
            "video_name": dataset_dict.get("video_name"),
            "height": int(dataset_dict["height"]),
            "width": int(dataset_dict["width"]),
            "frame_indices": frame_indices,
            "images": images,
            "instances": instances,
        }

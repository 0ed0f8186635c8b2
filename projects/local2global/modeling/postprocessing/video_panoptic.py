"""Video panoptic post-processing: each frame's slots merged into one panoptic id map, ids stable over the video.

:class:`PanopticVideoPostprocessor` has the interface of :class:`~local2global.modeling.postprocessing.video_instances.VideoPostprocessor`
(``reset`` / ``update`` / ``finalize`` / ``frame_instances``), so the meta-architecture, the ``VideoPredictor``
and every tracker use it unchanged (``model.postprocessor = L(PanopticVideoPostprocessor)(...)``). It consumes the
per-frame outputs in slot order (slot i = one track for the whole video, the tracker contract) and produces the
prediction contract of :class:`~local2global.evaluation.vps.VPSEvaluator`.

Per frame (MaskDINO's ``panoptic_inference`` with its settings, ``tests/data/maskdino/DETREX_NOTES.md`` §5; the
rule restated, not the code):

1. ``p = sigmoid(class logits)`` ``(N, C)``; a slot is a candidate when ``max_c p > object_mask_threshold`` (0.25).
2. With ``transform_eval`` the candidate's score and class are those of ``softmax(p / pano_temp)`` (0.06; a
   sigmoid is not sharp enough to weigh masks against each other, so MaskDINO sharpens it); the class is the same
   argmax either way.
3. Mask probabilities at the output resolution (stride-4 logits upsampled to the padded input, cropped, resized to
   the original frame: :func:`~local2global.modeling.postprocessing.video_instances.upsample_mask_logits`, then sigmoid).
4. Each pixel goes to the candidate with the largest ``score * mask probability`` (ties: the lower slot), and stays
   void unless that candidate's mask probability there is ``>= mask_prob_threshold`` (0.5).
5. A candidate keeps its pixels when it wins some, has some pixels of its own (prob >= 0.5), and wins at least
   ``overlap_threshold`` (0.8) of its own area; otherwise its pixels become void.
6. Ids: a **thing** candidate's id is its **slot index + 1** (so a track keeps its id on every frame); every **stuff**
   candidate of one class is merged into one segment whose id is ``stuff_id_offset + class`` (the same on every
   frame, and the same tube whichever slot predicts it). Thing or stuff is decided by the candidate's class on that
   frame (``thing_classes``).

Step 4 runs over chunks of candidate slots with a running maximum, so at most ``chunk_size`` full-resolution masks
exist at once (a 720p frame with 300 candidates would otherwise need 1.1 GB of float32).

The result keeps one ``int32`` map per frame at the original resolution (``H0 * W0 * 4`` bytes: 3.5 MiB at 720p)
in memory until :meth:`finalize`; per-slot mask logits are not stored (nothing waits for the end of the video, as
the instance post-processor's top-k must).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
import torch.nn.functional as F

from .video_instances import FrameInstances, upsample_mask_logits

__all__ = ["PanopticVideoPostprocessor", "PanopticFrame", "merge_panoptic_frame", "DEFAULT_STUFF_ID_OFFSET"]

logger = logging.getLogger(__name__)

#: Stuff segment ids are ``offset + class``: above every thing id (slot + 1) for up to 65535 slots, and far below
#: the RGB id limit 2^24 of the official PNG format.
DEFAULT_STUFF_ID_OFFSET = 1 << 16


@dataclass
class PanopticFrame:
    """One frame merged into a panoptic map.

    Attributes:
        panoptic_seg: ``(H0, W0)`` int32 ids (0 void).
        segments_info: ``[{"id", "category_id", "isthing", "score"}]``, one entry per id with pixels; a merged stuff
            segment carries the highest score of its slots.
        slot_of_pixel: ``(H0, W0)`` int64 slot that painted each pixel (-1 void); the per-slot masks of the
            streaming API come from it.
        slot_scores / slot_labels: ``(N,)`` the score and class of every slot on this frame (step 2).
    """

    panoptic_seg: Tensor
    segments_info: List[dict]
    slot_of_pixel: Tensor
    slot_scores: Tensor
    slot_labels: Tensor


def merge_panoptic_frame(pred_logits: Tensor, pred_masks: Tensor, is_thing_class: Tensor,
                         padded_size: Sequence[int], image_size: Sequence[int], output_size: Sequence[int], *,
                         object_mask_threshold: float = 0.25, overlap_threshold: float = 0.8,
                         pano_temp: float = 0.06, transform_eval: bool = True, mask_prob_threshold: float = 0.5,
                         stuff_id_offset: int = DEFAULT_STUFF_ID_OFFSET, chunk_size: int = 32) -> PanopticFrame:
    """Merge one frame's slots into a panoptic map (the module docstring's steps 1-6).

    Args:
        pred_logits: ``(N, C)`` class logits of the final decoder layer, slot order.
        pred_masks: ``(N, h, w)`` stride-4 mask logits.
        is_thing_class: ``(C,)`` bool, True for a thing class.
        padded_size / image_size / output_size: see :func:`~local2global.modeling.postprocessing.video_instances.upsample_mask_logits`.
        object_mask_threshold, overlap_threshold, pano_temp, transform_eval, mask_prob_threshold: MaskDINO's.
        stuff_id_offset: stuff ids are ``stuff_id_offset + class``; must exceed ``N``.
        chunk_size: candidate masks upsampled at once.

    Returns:
        :class:`PanopticFrame` on the device of ``pred_masks``.
    """
    num_slots, num_classes = pred_logits.shape
    if num_slots >= stuff_id_offset:
        raise ValueError(f"{num_slots} slots but stuff ids start at {stuff_id_offset}: thing and stuff ids would "
                         "collide (raise stuff_id_offset)")
    if is_thing_class.shape != (num_classes,):
        raise ValueError(f"is_thing_class has shape {tuple(is_thing_class.shape)}, the class head {num_classes} classes")
    device = pred_masks.device
    probs = pred_logits.detach().float().sigmoid().to(device)
    scores, labels = probs.max(-1)
    candidate = scores > object_mask_threshold
    if transform_eval:
        scores, labels = F.softmax(probs / pano_temp, dim=-1).max(-1)
    height, width = (int(s) for s in output_size)
    cand = candidate.nonzero(as_tuple=True)[0]
    num_cand = int(cand.numel())
    best_value = torch.full((height, width), -1.0, device=device)  # score * prob >= 0 > -1: the first chunk wins
    best_index = torch.zeros((height, width), dtype=torch.int64, device=device)
    best_prob = torch.zeros((height, width), device=device)
    own_area = torch.zeros(num_cand, dtype=torch.int64, device=device)
    for start in range(0, num_cand, chunk_size):
        idx = cand[start:start + chunk_size]
        mask_probs = upsample_mask_logits(pred_masks[idx].detach(), tuple(padded_size), tuple(image_size),
                                          (height, width)).sigmoid()
        own_area[start:start + len(idx)] = (mask_probs >= mask_prob_threshold).flatten(1).sum(1)
        value, arg = (scores[idx, None, None] * mask_probs).max(0)  # first maximum within the chunk
        better = value > best_value  # strict: an earlier chunk keeps a tie, as one argmax over all would
        best_value = torch.where(better, value, best_value)
        best_index = torch.where(better, arg + start, best_index)
        best_prob = torch.where(better, mask_probs.gather(0, arg[None])[0], best_prob)
    slot_of_pixel = torch.full((height, width), -1, dtype=torch.int64, device=device)
    panoptic = torch.zeros((height, width), dtype=torch.int32, device=device)
    segments: List[dict] = []
    if num_cand == 0:
        return PanopticFrame(panoptic, segments, slot_of_pixel, scores, labels)
    own_at_winner = best_prob >= mask_prob_threshold
    won_area = torch.bincount(best_index.flatten(), minlength=num_cand)
    kept_area = torch.bincount(best_index[own_at_winner], minlength=num_cand)
    keep = (won_area > 0) & (own_area > 0) & (kept_area > 0)
    keep &= won_area.double() / own_area.clamp(min=1).double() >= overlap_threshold
    cand_labels = labels[cand]
    cand_thing = is_thing_class.to(device)[cand_labels]
    ids = torch.where(cand_thing, cand + 1, stuff_id_offset + cand_labels).to(torch.int32)
    ids = torch.where(keep, ids, torch.zeros_like(ids))
    painted = own_at_winner & keep[best_index]
    panoptic = torch.where(painted, ids[best_index], panoptic)
    slot_of_pixel = torch.where(painted, cand[best_index], slot_of_pixel)
    # segments_info (one host copy): slot order, a stuff class listed once with its best slot score
    listed: Dict[int, dict] = {}
    for i, sid, thing, label, score in zip(cand.tolist(), ids.tolist(), cand_thing.tolist(), cand_labels.tolist(),
                                           scores[cand].tolist()):
        if sid == 0:
            continue
        if sid in listed:
            listed[sid]["score"] = max(listed[sid]["score"], score)
            continue
        listed[sid] = {"id": sid, "category_id": int(label), "isthing": bool(thing), "score": float(score)}
        if thing:
            listed[sid]["slot"] = i
    segments = list(listed.values())
    return PanopticFrame(panoptic, segments, slot_of_pixel, scores, labels)


@dataclass
class _VideoState:
    maps: List[np.ndarray] = field(default_factory=list)
    segments: List[List[dict]] = field(default_factory=list)
    num_frames: int = 0


class PanopticVideoPostprocessor:
    """Per-frame panoptic merge of a video, in the :class:`VPSEvaluator` prediction format.

    Args:
        thing_classes: the contiguous ids of the thing classes (VIPSeg: its 58 things); every other class of the
            head is stuff.
        object_mask_threshold / overlap_threshold / pano_temp / transform_eval: MaskDINO's panoptic settings
            (0.25 / 0.8 / 0.06 / True).
        mask_prob_threshold: mask probability a pixel needs to belong to a segment (MaskDINO: 0.5).
        stuff_id_offset: stuff segment ids are ``stuff_id_offset + class``.
        chunk_size: candidate masks upsampled at once.
        frame_score_threshold: the streaming API's per-frame instances keep segments whose slot score is at least
            this (as :class:`VideoPostprocessor`; the panoptic map itself does not use it).
    """

    def __init__(self, thing_classes: Sequence[int], object_mask_threshold: float = 0.25,
                 overlap_threshold: float = 0.8, pano_temp: float = 0.06, transform_eval: bool = True,
                 mask_prob_threshold: float = 0.5, stuff_id_offset: int = DEFAULT_STUFF_ID_OFFSET,
                 chunk_size: int = 32, frame_score_threshold: float = 0.0):
        self.thing_classes = sorted({int(c) for c in thing_classes})
        if self.thing_classes and self.thing_classes[0] < 0:
            raise ValueError(f"thing class ids must be >= 0, got {self.thing_classes[0]}")
        if pano_temp <= 0:
            raise ValueError(f"pano_temp must be > 0, got {pano_temp}")
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.pano_temp = pano_temp
        self.transform_eval = transform_eval
        self.mask_prob_threshold = mask_prob_threshold
        self.stuff_id_offset = int(stuff_id_offset)
        self.chunk_size = chunk_size
        self.frame_score_threshold = frame_score_threshold
        self._state = _VideoState()
        self._last: Optional[PanopticFrame] = None

    def reset(self) -> None:
        """Forget the current video."""
        self._state = _VideoState()
        self._last = None

    @property
    def num_frames(self) -> int:
        return self._state.num_frames

    def is_thing_class(self, num_classes: int, device) -> Tensor:
        """``(C,)`` bool lookup of :attr:`thing_classes` for a head of ``num_classes`` classes."""
        if self.thing_classes and self.thing_classes[-1] >= num_classes:
            raise ValueError(f"thing class {self.thing_classes[-1]} but the class head has {num_classes} classes")
        table = torch.zeros(num_classes, dtype=torch.bool, device=device)
        table[torch.as_tensor(self.thing_classes, dtype=torch.int64, device=device)] = True
        return table

    def merge(self, pred_logits: Tensor, pred_masks: Tensor, padded_size, image_size, output_size) -> PanopticFrame:
        """:func:`merge_panoptic_frame` with this post-processor's settings."""
        return merge_panoptic_frame(
            pred_logits, pred_masks, self.is_thing_class(pred_logits.shape[-1], pred_masks.device),
            padded_size, image_size, output_size, object_mask_threshold=self.object_mask_threshold,
            overlap_threshold=self.overlap_threshold, pano_temp=self.pano_temp, transform_eval=self.transform_eval,
            mask_prob_threshold=self.mask_prob_threshold, stuff_id_offset=self.stuff_id_offset,
            chunk_size=self.chunk_size)

    def update(self, pred_logits: Tensor, pred_masks: Tensor, padded_size: Sequence[int],
               image_size: Sequence[int], output_size: Sequence[int], keep_frame_masks: bool = False,
               store: bool = True) -> Optional[Tuple[Tensor, Tensor]]:
        """Merge one frame of one video (the arguments of :meth:`VideoPostprocessor.update`).

        Args:
            pred_logits: ``(N, C)``; pred_masks: ``(N, h, w)`` stride-4 logits.
            keep_frame_masks: also return ``(probs (N, C), masks (N, H0, W0) bool)``, where a slot's mask is the
                pixels it painted in the panoptic map (the streaming API's per-frame instances).
            store: keep the frame's map for :meth:`finalize` (``False`` for endless streams).
        """
        if pred_masks.shape[0] != pred_logits.shape[0]:
            raise ValueError(f"frame {self.num_frames}: {pred_masks.shape[0]} masks for {pred_logits.shape[0]} slots")
        frame = self.merge(pred_logits, pred_masks, padded_size, image_size, output_size)
        self._last = frame
        st = self._state
        if store:
            st.maps.append(frame.panoptic_seg.cpu().numpy())
            st.segments.append([{k: v for k, v in s.items() if k != "slot"} for s in frame.segments_info])
        st.num_frames += 1
        if not keep_frame_masks:
            return None
        probs = pred_logits.detach().float().sigmoid()
        slots = torch.arange(pred_logits.shape[0], device=frame.slot_of_pixel.device)
        masks = frame.slot_of_pixel[None] == slots[:, None, None]
        return probs, masks

    def frame_instances(self, frame_index: int, probs: Tensor, masks: Tensor, boxes: Tensor) -> FrameInstances:
        """The streaming API's instances of the last merged frame: slots that painted pixels, with their frame
        score (``transform_eval`` score) and class, scores >= ``frame_score_threshold``."""
        frame = self._last
        if frame is None:
            raise RuntimeError("frame_instances() needs a frame merged by update() first")
        scores = frame.slot_scores.to(masks.device)
        keep = masks.flatten(1).any(1) & (scores >= self.frame_score_threshold)
        keep = keep.nonzero(as_tuple=True)[0]
        return FrameInstances(frame_index, keep, scores[keep], frame.slot_labels.to(masks.device)[keep], masks[keep],
                              boxes[keep])

    def finalize(self, video_id, image_size: Tuple[int, int]) -> Dict:
        """The video's result in the :class:`VPSEvaluator` format, then reset.

        Returns:
            ``{"video_id", "image_size", "panoptic_seg": [(H0, W0) int32] * T, "segments_info": [[{"id",
            "category_id", "isthing", "score"}]] * T}``.
        """
        st = self._state
        if st.num_frames == 0:
            raise RuntimeError(f"video {video_id}: finalize() called before any frame was processed")
        result = {"video_id": video_id, "image_size": tuple(int(s) for s in image_size),
                  "panoptic_seg": st.maps, "segments_info": st.segments}
        self.reset()
        return result

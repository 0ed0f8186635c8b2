"""Streaming video post-processing: per-slot running scores and per-frame RLE masks.

Online inference must not hold the mask logits of past frames (memory would grow with the video length), so
each frame's masks are upsampled to the original resolution, thresholded and RLE-encoded as soon as the frame
is done (:meth:`VideoPostprocessor.update`); only the RLEs and an ``(N, C)`` running sum of class probabilities
are kept. :meth:`VideoPostprocessor.finalize` then picks the video-level top-k slot x class pairs (SPEC §3:
score = mean over frames of the slot's sigmoid class probability; 10 for YouTube-VIS, 20 for OVIS).

Masks are upsampled in chunks of slots (``chunk_size``) so that 300 slots at 720p never materialise a
300 x 720 x 1280 float tensor at once.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torch import Tensor

__all__ = ["VideoPostprocessor", "FrameInstances", "FrameRLEStore", "upsample_mask_logits", "encode_binary_masks"]


def upsample_mask_logits(mask_logits: Tensor, padded_size: Tuple[int, int], image_size: Tuple[int, int],
                         output_size: Tuple[int, int]) -> Tensor:
    """Bring stride-4 mask logits to the original resolution, as MaskDINO / detectron2 do.

    Args:
        mask_logits: ``(n, h, w)`` logits on the mask-feature grid of the padded input.
        padded_size: ``(Hp, Wp)`` size of the padded network input.
        image_size: ``(Hi, Wi)`` size of the resized (unpadded) network input.
        output_size: ``(H0, W0)`` original frame size.

    Returns:
        ``(n, H0, W0)`` logits (bilinear, ``align_corners=False``: upsample to the padded size, crop the padding,
        resize to the original size).
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, *output_size))
    x = F.interpolate(mask_logits[:, None].float(), size=padded_size, mode="bilinear", align_corners=False)
    x = x[:, :, : image_size[0], : image_size[1]]
    if tuple(image_size) != tuple(output_size):
        x = F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)
    return x[:, 0]


def encode_binary_masks(masks: Tensor) -> List[Optional[dict]]:
    """RLE-encode ``(n, H, W)`` bool masks; an empty mask becomes ``None`` (YouTube-VIS "no mask").

    Returns:
        ``n`` compressed RLE dicts with ``str`` counts (JSON-ready), or ``None`` for empty masks.
    """
    if masks.shape[0] == 0:
        return []
    arr = np.asfortranarray(masks.permute(1, 2, 0).to(torch.uint8).cpu().numpy())
    rles = mask_utils.encode(arr)
    nonempty = masks.flatten(1).any(dim=1).tolist()
    out: List[Optional[dict]] = []
    for rle, keep in zip(rles, nonempty):
        if keep:
            rle["counts"] = rle["counts"].decode("ascii")
            out.append(rle)
        else:
            out.append(None)
    return out


@dataclass
class FrameInstances:
    """Per-frame tracked instances (the streaming API's output for one frame).

    Attributes:
        frame_index: index of the frame in the video.
        track_ids: ``(m,)`` slot indices (a slot keeps its instance for the whole video).
        scores: ``(m,)`` class probability of the slot's best class on this frame.
        labels: ``(m,)`` contiguous class ids.
        masks: ``(m, H0, W0)`` bool masks at the original resolution.
        boxes: ``(m, 4)`` normalised ``(cx, cy, w, h)`` Mask2Box boxes of the slots.
    """

    frame_index: int
    track_ids: Tensor
    scores: Tensor
    labels: Tensor
    masks: Tensor
    boxes: Tensor


class FrameRLEStore:
    """The per-frame RLEs of every slot of one video, kept until the video's top-k slots are known.

    The final top-k slots are only known when the video ends (the score is a mean over all frames), so every
    slot's RLE of every frame must be kept: for N = 300 slots that is O(N) strings per frame, the one thing in
    online inference that grows with the video length. With ``spill=True`` (default) each frame is appended as
    one JSON line to an anonymous temporary file (deleted on close) and :meth:`select` reads back only the chosen
    slots, so memory stays flat for any length; ``spill=False`` keeps the lists in memory (faster for short
    clips).

    Args:
        spill: write frames to a temporary file instead of keeping them in memory.
        spill_dir: directory of the temporary file (default: the system's temp dir).
    """

    def __init__(self, spill: bool = True, spill_dir: Optional[str] = None):
        self.spill = spill
        self.spill_dir = spill_dir
        self._frames: List[List[Optional[dict]]] = []
        self._file = None
        self.num_frames = 0

    def append(self, frame_rles: List[Optional[dict]]) -> None:
        """Store one frame's ``N`` RLEs (``None`` for empty masks)."""
        if self.spill:
            if self._file is None:
                self._file = tempfile.TemporaryFile(mode="w+", dir=self.spill_dir, encoding="ascii")
            self._file.write(json.dumps(frame_rles, separators=(",", ":")))
            self._file.write("\n")
        else:
            self._frames.append(frame_rles)
        self.num_frames += 1

    def select(self, slots: Sequence[int]) -> List[List[Optional[dict]]]:
        """``[slot][frame]`` RLEs of ``slots`` (in that order), reading the frames once."""
        out: List[List[Optional[dict]]] = [[] for _ in slots]
        if self._file is None:
            frames = iter(self._frames)
        else:
            self._file.flush()
            self._file.seek(0)
            frames = (json.loads(line) for line in self._file)
        for frame in frames:
            for i, s in enumerate(slots):
                out[i].append(frame[s])
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._frames = []


@dataclass
class _VideoState:
    score_sum: Optional[Tensor] = None  # (N, C) float64 running sum of sigmoid class probabilities
    num_frames: int = 0
    rles: Optional[FrameRLEStore] = None  # [frame][slot], created on the first stored frame


class VideoPostprocessor:
    """Accumulates one video's per-frame predictions into the evaluator's results format (SPEC §5).

    Args:
        test_topk: number of slot x class pairs kept per video (10 YouTube-VIS, 20 OVIS).
        mask_threshold: threshold on the mask logit (0 = sigmoid > 0.5).
        chunk_size: slots upsampled at once (bounds peak memory at high resolution).
        frame_score_threshold: per-frame streaming output keeps slots whose best class probability is at least
            this (SPEC §3).
        spill_rles: keep the per-frame RLEs of all slots in a temporary file until the video ends
            (:class:`FrameRLEStore`), so that memory does not grow with the video length.
    """

    def __init__(self, test_topk: int = 10, mask_threshold: float = 0.0, chunk_size: int = 32,
                 frame_score_threshold: float = 0.5, spill_rles: bool = True):
        if test_topk < 1:
            raise ValueError(f"test_topk must be >= 1, got {test_topk}")
        self.test_topk = test_topk
        self.mask_threshold = mask_threshold
        self.chunk_size = chunk_size
        self.frame_score_threshold = frame_score_threshold
        self.spill_rles = spill_rles
        self._state = _VideoState()

    def reset(self) -> None:
        """Forget the current video."""
        if self._state.rles is not None:
            self._state.rles.close()
        self._state = _VideoState()

    @property
    def num_frames(self) -> int:
        return self._state.num_frames

    def binarize(self, mask_logits: Tensor, padded_size: Sequence[int], image_size: Sequence[int],
                 output_size: Sequence[int]) -> Tensor:
        """``(n, h, w)`` logits -> ``(n, H0, W0)`` bool masks, chunk by chunk."""
        chunks = []
        for start in range(0, mask_logits.shape[0], self.chunk_size):
            logits = upsample_mask_logits(mask_logits[start:start + self.chunk_size], tuple(padded_size),
                                          tuple(image_size), tuple(output_size))
            chunks.append(logits > self.mask_threshold)
        if not chunks:
            return mask_logits.new_zeros((0, *output_size), dtype=torch.bool)
        return torch.cat(chunks)

    def update(self, pred_logits: Tensor, pred_masks: Tensor, padded_size: Sequence[int],
               image_size: Sequence[int], output_size: Sequence[int], keep_frame_masks: bool = False,
               store: bool = True) -> Optional[Tuple[Tensor, Tensor]]:
        """Consume one frame of one video.

        Args:
            pred_logits: ``(N, C)`` class logits of the final decoder layer.
            pred_masks: ``(N, h, w)`` mask logits (stride 4 of the padded input).
            padded_size / image_size / output_size: see :func:`upsample_mask_logits`.
            keep_frame_masks: also return this frame's probabilities and bool masks (streaming API).
            store: keep this frame's RLEs for the video-level result. A live stream that only wants per-frame
                instances passes ``False`` so that nothing grows with the stream's length.

        Returns:
            ``(probs (N, C), masks (N, H0, W0) bool)`` when ``keep_frame_masks`` else ``None``.
        """
        probs = pred_logits.detach().float().sigmoid()
        st = self._state
        if st.score_sum is None:
            st.score_sum = torch.zeros(probs.shape, dtype=torch.float64, device=probs.device)
        elif st.score_sum.shape != probs.shape:
            raise ValueError(f"frame {st.num_frames}: got {tuple(probs.shape)} class scores, "
                             f"expected {tuple(st.score_sum.shape)} (slots x classes) as on earlier frames")
        st.score_sum += probs.double()
        masks = self.binarize(pred_masks.detach(), padded_size, image_size, output_size)
        if store:
            if st.rles is None:
                st.rles = FrameRLEStore(spill=self.spill_rles)
            st.rles.append(encode_binary_masks(masks))
        st.num_frames += 1
        return (probs, masks) if keep_frame_masks else None

    def frame_instances(self, frame_index: int, probs: Tensor, masks: Tensor, boxes: Tensor) -> FrameInstances:
        """Streaming output of one frame: slots whose best class probability >= ``frame_score_threshold``."""
        scores, labels = probs.max(dim=1)
        keep = (scores >= self.frame_score_threshold).nonzero(as_tuple=True)[0]
        return FrameInstances(frame_index, keep, scores[keep], labels[keep], masks[keep], boxes[keep])

    def finalize(self, video_id, image_size: Tuple[int, int]) -> Dict:
        """Video-level result in the evaluator's format (SPEC §5) and reset.

        Returns:
            ``{"video_id", "image_size", "scores", "labels", "segmentations"}``; ``segmentations[i]`` is the
            list of per-frame RLEs (or ``None``) of the i-th selected slot.
        """
        st = self._state
        if st.num_frames == 0:
            raise RuntimeError(f"video {video_id}: finalize() called before any frame was processed")
        mean = (st.score_sum / st.num_frames).float()
        num_slots, num_classes = mean.shape
        k = min(self.test_topk, num_slots * num_classes)
        # Stable descending order so that ties keep the (slot, class) order.
        order = torch.sort(mean.flatten().cpu(), descending=True, stable=True).indices[:k]
        slots = (order // num_classes).tolist()
        result = {
            "video_id": video_id,
            "image_size": tuple(int(s) for s in image_size),
            "scores": mean.flatten().cpu()[order].tolist(),
            "labels": (order % num_classes).tolist(),
            "segmentations": st.rles.select(slots) if st.rles is not None else [[] for _ in slots],
        }
        self.reset()
        return result

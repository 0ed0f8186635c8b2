"""Streaming video post-processing: per-slot running scores, and masks finished only for the slots kept.

Online inference must not hold the mask logits of past frames in memory (memory would grow with the video length),
and a video-level result keeps only ``test_topk`` slot x class pairs (SPEC §3: score = mean over frames of the
slot's sigmoid class probability; 10 for YouTube-VIS, 20 for OVIS), which are known only when the video ends.

:meth:`VideoPostprocessor.update` therefore does per frame only what every slot needs: it adds the frame's class
probabilities to an ``(N, C)`` running sum and appends the frame's *low-resolution* (stride-4) mask logits of the
slots whose mask can be non-empty to a :class:`FrameLogitStore` (an anonymous temporary file by default, so memory
stays flat). :meth:`VideoPostprocessor.finalize` picks the top-k pairs, reads back the logits of the selected slots
only, and upsamples, thresholds and RLE-encodes those: ``k`` masks per frame instead of ``N`` (300). The result is
the same, bit for bit, as upsampling and encoding every slot on every frame (``deferred=False``, the previous
behaviour and the oracle of the tests): the same logits go through the same functions on the same device.

Why a slot can be left out of a frame: with the default ``mask_threshold=0``, a slot whose stride-4 logits are all
``<= 0`` has an empty full-resolution mask, exactly: bilinear interpolation (``align_corners=False``) writes each
output as a sum of products of non-negative weights with the inputs, so non-positive inputs give non-positive
outputs in floating point too (no rounding can cross 0), and cropping keeps that. For another threshold every slot
is stored (the argument fails by rounding near a non-zero threshold).

Masks are upsampled in chunks of slots (``chunk_size``) so that many slots at 720p never materialise an
``n x 720 x 1280`` float tensor at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import logging
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils
import torch
from torch import Tensor
import torch.nn.functional as F

__all__ = ["VideoPostprocessor", "FrameInstances", "FrameRLEStore", "FrameLogitStore", "upsample_mask_logits",
           "encode_binary_masks"]

logger = logging.getLogger(__name__)

#: dtype of the stored low-resolution logits. float32 is exact for float32 / float16 / bfloat16 predictions, and
#: :func:`upsample_mask_logits` converts to float32 first anyway.
_STORE_DTYPE = np.float32
_SLOT_INDEX_DTYPE = np.int32


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
class _FrameRecord:
    """Where one frame of a :class:`FrameLogitStore` is and what it needs to be finished."""

    offset: int  # byte offset of the slot-index array in the spill file (spill mode)
    num_slots: int  # rows stored (slots whose mask can be non-empty)
    height: int
    width: int
    sizes: Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]  # padded, image, output size
    slots: Optional[np.ndarray] = None  # (n,) int32, in memory mode
    logits: Optional[np.ndarray] = None  # (n, h, w) float32, in memory mode


class FrameLogitStore:
    """The stride-4 mask logits of one video, per frame, for the slots whose mask can be non-empty.

    Each frame is one record ``[slot indices (n,) int32][logits (n, h, w) float32]`` appended to an anonymous
    temporary file (``spill=True``, deleted on close) or kept in memory (``spill=False``); in memory stays a
    few dozen bytes of bookkeeping per frame. :meth:`rows` reads back only the rows of the requested slots
    (one seek per slot and frame), so finishing the top-k slots reads ``k`` rows per frame, not the whole record.

    Size: ``4 * h * w`` bytes per stored slot and frame (a 360x640 frame padded to 384x640 has 96x160 logits:
    60 KiB per slot, 17.6 MiB per frame for 300 slots at most), on disk, not in memory.

    Args:
        spill: write frames to a temporary file instead of keeping them in memory.
        spill_dir: directory of the temporary file (default: the system's temp dir).
    """

    def __init__(self, spill: bool = True, spill_dir: Optional[str] = None):
        self.spill = spill
        self.spill_dir = spill_dir
        self._records: List[_FrameRecord] = []
        self._file = None
        self._end = 0

    @property
    def num_frames(self) -> int:
        return len(self._records)

    def append(self, slots: np.ndarray, logits: np.ndarray, sizes) -> None:
        """Store one frame.

        Args:
            slots: ``(n,)`` ascending slot indices of the stored rows.
            logits: ``(n, h, w)`` their logits.
            sizes: ``(padded_size, image_size, output_size)`` of the frame (see :func:`upsample_mask_logits`).
        """
        slots = np.ascontiguousarray(slots, dtype=_SLOT_INDEX_DTYPE)
        logits = np.ascontiguousarray(logits, dtype=_STORE_DTYPE)
        _, height, width = logits.shape
        sizes = tuple(tuple(int(v) for v in size) for size in sizes)
        record = _FrameRecord(offset=self._end, num_slots=len(slots), height=height, width=width, sizes=sizes)
        if self.spill:
            if self._file is None:
                self._file = tempfile.TemporaryFile(mode="w+b", dir=self.spill_dir)
            self._file.seek(self._end)
            self._file.write(slots.tobytes())
            self._file.write(logits.tobytes())
            self._end = self._file.tell()
        else:
            record.slots, record.logits = slots, logits
        self._records.append(record)

    def rows(self, wanted: Sequence[int]):
        """Iterate over the frames: ``(sizes, present (m,) slot indices, logits (m, h, w))`` for the slots of
        ``wanted`` (ascending) that are stored in that frame."""
        wanted = np.asarray(sorted(set(int(s) for s in wanted)), dtype=_SLOT_INDEX_DTYPE)
        row_bytes_per_pixel = np.dtype(_STORE_DTYPE).itemsize
        if self._file is not None:
            self._file.flush()
        for rec in self._records:
            if rec.slots is not None:
                slots = rec.slots
            else:
                self._file.seek(rec.offset)
                slots = np.frombuffer(self._file.read(rec.num_slots * np.dtype(_SLOT_INDEX_DTYPE).itemsize),
                                      dtype=_SLOT_INDEX_DTYPE)
            pos = np.searchsorted(slots, wanted)
            hit = pos < len(slots)
            hit[hit] = slots[pos[hit]] == wanted[hit]
            present, rows = wanted[hit], pos[hit]
            if rec.logits is not None:
                logits = rec.logits[rows]
            else:
                row_bytes = rec.height * rec.width * row_bytes_per_pixel
                base = rec.offset + rec.num_slots * np.dtype(_SLOT_INDEX_DTYPE).itemsize
                logits = np.empty((len(rows), rec.height, rec.width), dtype=_STORE_DTYPE)
                for i, row in enumerate(rows):
                    self._file.seek(base + int(row) * row_bytes)
                    logits[i] = np.frombuffer(self._file.read(row_bytes), dtype=_STORE_DTYPE).reshape(
                        rec.height, rec.width)
            yield rec.sizes, present, logits

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._records = []
        self._end = 0


@dataclass
class _VideoState:
    score_sum: Optional[Tensor] = None  # (N, C) float64 running sum of sigmoid class probabilities
    num_frames: int = 0
    rles: Optional[FrameRLEStore] = None  # deferred=False: [frame][slot] RLEs, created on the first stored frame
    logits: Optional[FrameLogitStore] = None  # deferred=True: low-resolution logits, created likewise
    num_slots: int = 0
    mask_device: Optional[torch.device] = field(default=None)  # where the masks were predicted (and are finished)


class VideoPostprocessor:
    """Accumulates one video's per-frame predictions into the evaluator's results format (SPEC §5).

    Args:
        test_topk: number of slot x class pairs kept per video (10 YouTube-VIS, 20 OVIS).
        mask_threshold: threshold on the mask logit (0 = sigmoid > 0.5).
        chunk_size: slots upsampled at once (bounds peak memory at high resolution).
        frame_score_threshold: per-frame streaming output keeps slots whose best class probability is at least
            this (SPEC §3).
        spill_rles: keep what the video-level result needs (the low-resolution logits, or with
            ``deferred=False`` the RLEs of all slots) in a temporary file until the video ends, so that memory
            does not grow with the video length.
        deferred: store each frame's low-resolution logits and finish (upsample, threshold, RLE) only the
            selected slots in :meth:`finalize` (:class:`FrameLogitStore`; default). ``False``: finish every slot
            on every frame and store the RLEs (:class:`FrameRLEStore`), the previous behaviour: same result, N/k
            times the upsampling and encoding work; kept as the oracle of the deferred path.
    """

    def __init__(self, test_topk: int = 10, mask_threshold: float = 0.0, chunk_size: int = 32,
                 frame_score_threshold: float = 0.5, spill_rles: bool = True, deferred: bool = True):
        if test_topk < 1:
            raise ValueError(f"test_topk must be >= 1, got {test_topk}")
        self.test_topk = test_topk
        self.mask_threshold = mask_threshold
        self.chunk_size = chunk_size
        self.frame_score_threshold = frame_score_threshold
        self.spill_rles = spill_rles
        self.deferred = deferred
        self._state = _VideoState()

    def reset(self) -> None:
        """Forget the current video."""
        if self._state.rles is not None:
            self._state.rles.close()
        if self._state.logits is not None:
            self._state.logits.close()
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
            keep_frame_masks: also return this frame's probabilities and bool masks (streaming API; every slot is
                then upsampled on this frame, as :meth:`frame_instances` picks its slots from all N).
            store: keep what the video-level result needs of this frame (the low-resolution logits, or with
                ``deferred=False`` the RLEs). A live stream that only wants per-frame instances passes ``False`` so
                that nothing grows with the stream's length.

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
        st.num_slots = probs.shape[0]
        if pred_masks.shape[0] != probs.shape[0]:
            raise ValueError(f"frame {st.num_frames}: {pred_masks.shape[0]} masks for {probs.shape[0]} slots")
        masks = None
        if keep_frame_masks or (store and not self.deferred):
            masks = self.binarize(pred_masks.detach(), padded_size, image_size, output_size)
        if store and self.deferred:
            self._store_logits(pred_masks.detach(), (padded_size, image_size, output_size))
        elif store:
            if st.rles is None:
                st.rles = FrameRLEStore(spill=self.spill_rles)
            st.rles.append(encode_binary_masks(masks))
        st.num_frames += 1
        return (probs, masks) if keep_frame_masks else None

    def _store_logits(self, mask_logits: Tensor, sizes) -> None:
        """Append the frame's ``(N, h, w)`` logits of the slots that can have a non-empty mask (one host copy)."""
        st = self._state
        if st.logits is None:
            st.logits = FrameLogitStore(spill=self.spill_rles)
            st.mask_device = mask_logits.device
        host = mask_logits.float().cpu().numpy()
        if self.mask_threshold == 0.0:
            # An all-non-positive slot has an empty mask at any resolution (module docstring): not stored.
            slots = np.flatnonzero(~(host.reshape(host.shape[0], -1) <= 0.0).all(axis=1))
        else:
            slots = np.arange(host.shape[0])
        st.logits.append(slots, host[slots], sizes)

    def _finish_slots(self, slots: Sequence[int]) -> Dict[int, List[Optional[dict]]]:
        """Per-frame RLEs (``None`` = empty) of ``slots``, finished from the stored logits on the device they
        were predicted on (the same upsampling as the non-deferred path, so the same bits)."""
        st = self._state
        unique = sorted(set(int(s) for s in slots))
        out: Dict[int, List[Optional[dict]]] = {s: [] for s in unique}
        if st.logits is None:
            return out
        for (padded, image, output), present, logits in st.logits.rows(unique):
            frame: Dict[int, Optional[dict]] = {}
            if len(present):
                masks = self.binarize(torch.from_numpy(logits).to(st.mask_device), padded, image, output)
                frame = dict(zip(present.tolist(), encode_binary_masks(masks)))
            for s in unique:
                out[s].append(frame.get(s))
        return out

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
            "segmentations": self._segmentations(slots),
        }
        self.reset()
        return result

    def _segmentations(self, slots: List[int]) -> List[List[Optional[dict]]]:
        """``[pair][frame]`` RLEs of the selected slots (a slot selected with two classes gets two equal lists)."""
        st = self._state
        if st.rles is not None:
            return st.rles.select(slots)
        if st.logits is not None:
            finished = self._finish_slots(slots)
            return [list(finished[s]) for s in slots]
        return [[] for _ in slots]

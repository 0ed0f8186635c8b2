"""Dataset mappers for videos: training clips and lazily loaded whole test videos (SPEC §5).

Training sample (:class:`VideoClipDatasetMapper`), one dict per clip::

    {"video_id": int, "height": H0, "width": W0, "frame_indices": [int] * T,
     "images": [uint8 Tensor (3, H, W)] * T,
     "instances": [Instances] * T}

Every frame's :class:`~detectron2.structures.Instances` (``image_size`` = (H, W) after augmentation)
lists the same tracks in the same order (sorted by track id) with

* ``gt_ids``     int64 ``(n,)``: the annotation (track) id,
* ``gt_classes`` int64 ``(n,)``: contiguous category id,
* ``gt_masks``   :class:`~detectron2.structures.BitMasks` over a bool ``(n, H, W)`` tensor (``.tensor``),
* ``gt_boxes``   :class:`~detectron2.structures.Boxes` ``(n, 4)``: absolute xyxy, the mask's extent
  (``BitMasks.get_bounding_boxes``: ``x1 = max column + 1``), zeros for an empty mask,
* ``gt_valid``   bool ``(n,)``: the mask has at least one pixel on this frame.

Tracks empty in every sampled frame (after augmentation) are dropped; crowd annotations are ignored.

Test sample (:class:`VideoTestDatasetMapper`)::

    {"video_id", "height", "width", "length", "file_names", "frames": LazyVideoFrames}

where iterating ``frames`` reads and resizes one frame at a time (uint8 ``(3, H, W)`` tensors), by default two
frames ahead in a background thread (``prefetch_frames``), so decoding overlaps the model.

Random numbers: by default the mappers draw from numpy's global generator, as detectron2's mappers and
augmentations do (detectron2 seeds it per data-loader worker). Pass ``rng`` (a ``numpy.random.Generator``)
to a call, or ``seed`` to the constructor, to make a sample reproducible; the augmentations then run under
a temporary global numpy state seeded from that generator.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils

from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from .prefetch import prefetch

logger = logging.getLogger(__name__)

__all__ = [
    "FrameReadError",
    "VideoClipDatasetMapper",
    "VideoTestDatasetMapper",
    "LazyVideoFrames",
    "read_frame",
    "sample_frame_indices",
    "seeded_global_numpy",
    "seeded_rng",
    "clip_instances",
]


class FrameReadError(RuntimeError):
    """A frame file that is missing, unreadable or of the wrong size (the message names file and video)."""


def read_frame(file_name: str, image_format: str, video_id, expected_hw: Optional[Sequence[int]] = None) -> np.ndarray:
    """Read one frame as an ``(H, W, 3)`` uint8 array.

    Raises:
        FrameReadError: the file is missing or corrupt, or its size differs from ``expected_hw`` (the video's
            ``height, width``); the message names the file and the video id.
    """
    try:
        image = utils.read_image(file_name, format=image_format)
    except FileNotFoundError as e:
        raise FrameReadError(f"video_id {video_id}: frame file {file_name!r} does not exist") from e
    except Exception as e:  # PIL raises various errors on corrupt files
        raise FrameReadError(f"video_id {video_id}: cannot read frame file {file_name!r}: {e}") from e
    if expected_hw is not None and tuple(image.shape[:2]) != tuple(int(x) for x in expected_hw):
        raise FrameReadError(
            f"video_id {video_id}: frame file {file_name!r} is {image.shape[0]}x{image.shape[1]} but the "
            f"annotation says {expected_hw[0]}x{expected_hw[1]} (height x width)"
        )
    return image


@contextlib.contextmanager
def seeded_global_numpy(rng: Optional[np.random.Generator]):
    """Run the body with numpy's global RNG seeded from ``rng`` (no-op for ``None``); restore it afterwards."""
    if rng is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(int(rng.integers(0, 2**32 - 1)))
    try:
        yield
    finally:
        np.random.set_state(state)


def _default_rng(rng: Optional[np.random.Generator]) -> np.random.Generator:
    """``rng``, or a generator drawn from numpy's global RNG (so detectron2's worker seeding applies)."""
    return rng if rng is not None else np.random.default_rng(np.random.randint(0, 2**31 - 1))


def seeded_rng(seed: int, call_index: int) -> np.random.Generator:
    """The generator of sample ``call_index`` of a mapper constructed with ``seed``.

    The data-loader worker id and the process rank are part of the seed, so parallel copies of one mapper
    (one per worker and process) draw different samples.
    """
    import torch.utils.data

    from detectron2.utils import comm

    info = torch.utils.data.get_worker_info()
    worker = info.id if info is not None else 0
    return np.random.default_rng([int(seed), comm.get_rank(), worker, int(call_index)])


def sample_frame_indices(length: int, num_frames: int, frame_range: int, rng: np.random.Generator,
                         shuffle: bool = False) -> List[int]:
    """Pick ``num_frames`` frame indices in a window around a random reference frame.

    The reference ``r`` is uniform in ``0..length-1``; the other ``num_frames - 1`` frames are drawn from
    ``[r - frame_range, r + frame_range] \\ {r}`` (clipped to the video) without replacement when the window
    has enough frames, with replacement otherwise (a video of one frame repeats it). The result is sorted
    unless ``shuffle``.
    """
    if length < 1:
        raise ValueError(f"cannot sample frames from a video of length {length}")
    ref = int(rng.integers(length))
    lo, hi = max(0, ref - frame_range), min(length, ref + frame_range + 1)
    candidates = np.array([i for i in range(lo, hi) if i != ref], dtype=np.int64)
    k = num_frames - 1
    if k <= 0:
        picked = np.zeros(0, dtype=np.int64)
    elif candidates.size == 0:
        picked = np.full(k, ref, dtype=np.int64)
    else:
        picked = rng.choice(candidates, size=k, replace=candidates.size < k)
    out = sorted([ref] + picked.tolist())
    if shuffle:
        out = [out[i] for i in rng.permutation(len(out))]
    return [int(i) for i in out]


def clip_instances(image_size, track_ids: Sequence[int], classes: Sequence[int],
                   masks_per_frame: Sequence[np.ndarray]) -> List[Instances]:
    """Build the per-frame :class:`Instances` of a clip (see the module docstring).

    Args:
        image_size: ``(H, W)`` of every frame.
        track_ids, classes: ``n`` track ids and contiguous classes (same order in every frame).
        masks_per_frame: ``T`` bool arrays ``(n, H, W)``.
    """
    h, w = image_size
    ids = torch.as_tensor(list(track_ids), dtype=torch.int64)
    cls = torch.as_tensor(list(classes), dtype=torch.int64)
    out = []
    for masks in masks_per_frame:
        m = torch.from_numpy(np.ascontiguousarray(masks, dtype=bool)).reshape(len(ids), h, w)
        bm = BitMasks(m)
        inst = Instances((h, w))
        inst.gt_ids = ids.clone()
        inst.gt_classes = cls.clone()
        inst.gt_masks = bm
        inst.gt_boxes = Boxes(bm.get_bounding_boxes().tensor)
        inst.gt_valid = m.flatten(1).any(dim=1) if len(ids) else torch.zeros(0, dtype=torch.bool)
        out.append(inst)
    return out


def _to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _decode(segmentation, height: int, width: int) -> np.ndarray:
    """Compressed RLE (from ``load_ytvis_json``), uncompressed RLE or polygons -> ``(H, W)`` uint8 mask."""
    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
        return mask_utils.decode(rle).astype(np.uint8)
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(np.uint8)
    raise TypeError(f"unsupported segmentation type {type(segmentation).__name__}")


class VideoClipDatasetMapper:
    """Video dataset dict (``load_ytvis_json``) -> training clip (SPEC §5 training sample).

    Args:
        augmentations: detectron2 augmentations (e.g. ``ResizeShortestEdge``, ``RandomFlip``,
            ``RandomCrop``); their transforms are computed once on the clip's first frame and the same
            ``TransformList`` is applied to every frame and mask of the clip.
        num_frames: T, frames per clip.
        sampling_frame_range: half-width of the window around the reference frame.
        sampling_frame_shuffle: shuffle the sampled frames instead of sorting them.
        image_format: ``"RGB"`` (default, MaskDINO's normalisation) or ``"BGR"``.
        seed: if given, sample ``i`` of this mapper (in call order) uses :func:`seeded_rng` ``(seed, i)``
            (reproducible for a fixed number of workers and processes).
    """

    def __init__(self, augmentations: Sequence[T.Augmentation] = (), num_frames: int = 4,
                 sampling_frame_range: int = 5, sampling_frame_shuffle: bool = False,
                 image_format: str = "RGB", seed: Optional[int] = None):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.augmentations = T.AugmentationList(list(augmentations))
        self.num_frames = int(num_frames)
        self.sampling_frame_range = int(sampling_frame_range)
        self.sampling_frame_shuffle = bool(sampling_frame_shuffle)
        self.image_format = image_format
        self.seed = seed
        self._calls = 0
        logger.info("%s: %d frames, range %d, augmentations %s", type(self).__name__,
                    self.num_frames, self.sampling_frame_range, self.augmentations)

    def _next_rng(self, rng: Optional[np.random.Generator]) -> Optional[np.random.Generator]:
        if rng is None and self.seed is not None:
            rng = seeded_rng(self.seed, self._calls)
        self._calls += 1
        return rng

    def _sample_clip(self, dataset_dict: dict, rng: Optional[np.random.Generator]) -> List[int]:
        """The clip's frame indices (validates that the video lists one file per frame)."""
        length = int(dataset_dict["length"])
        if len(dataset_dict["file_names"]) != length:
            raise ValueError(f"video_id {dataset_dict['video_id']}: {len(dataset_dict['file_names'])} file names for "
                             f"a video of length {length}")
        return sample_frame_indices(length, self.num_frames, self.sampling_frame_range, _default_rng(rng),
                                    self.sampling_frame_shuffle)

    def _read_clip(self, dataset_dict: dict, frame_indices: Sequence[int], num_targets: int,
                   frame_masks: Callable, rng: Optional[np.random.Generator]):
        """Read and transform the clip's frames and their target masks.

        The augmentation's transforms are computed on the first frame and applied to every frame and mask.

        Args:
            frame_masks: ``frame_masks(t, transforms, (h, w)) -> (num_targets, h, w) bool`` masks of frame ``t``.

        Returns:
            ``(images, masks_per_frame)``: ``3×h×w`` uint8 tensors and bool arrays, one per sampled frame.
        """
        video_id, file_names = dataset_dict["video_id"], dataset_dict["file_names"]
        hw0 = (int(dataset_dict["height"]), int(dataset_dict["width"]))
        images, masks_per_frame, transforms = [], [], None
        with seeded_global_numpy(rng):
            for t in frame_indices:
                image = read_frame(file_names[t], self.image_format, video_id, hw0)
                if transforms is None:
                    aug_input = T.AugInput(image)
                    transforms = self.augmentations(aug_input)
                    image = aug_input.image
                else:
                    image = transforms.apply_image(image)
                hw = image.shape[:2]
                masks = frame_masks(t, transforms, hw) if num_targets else np.zeros((0, *hw), dtype=bool)
                images.append(_to_chw_tensor(image))
                masks_per_frame.append(masks)
        return images, masks_per_frame

    @staticmethod
    def _drop_empty_targets(target_ids: List[int], masks_per_frame: List[np.ndarray]):
        """Targets empty in every sampled frame (e.g. cropped away) are dropped: ``(ids, masks_per_frame)``."""
        if not target_ids:
            return target_ids, masks_per_frame
        keep = np.stack([m.reshape(len(target_ids), -1).any(axis=1) for m in masks_per_frame]).any(axis=0)
        return [tid for tid, k in zip(target_ids, keep) if k], [m[keep] for m in masks_per_frame]

    def __call__(self, dataset_dict: dict, rng: Optional[np.random.Generator] = None) -> dict:
        rng = self._next_rng(rng)
        video_id = dataset_dict["video_id"]
        h0, w0 = int(dataset_dict["height"]), int(dataset_dict["width"])
        file_names = dataset_dict["file_names"]
        frame_indices = self._sample_clip(dataset_dict, rng)
        per_frame_anns = dataset_dict.get("annotations") or [[] for _ in range(int(dataset_dict["length"]))]

        # tracks of the clip (non-crowd, present in at least one sampled frame), sorted by id
        track_cls = {}
        for t in frame_indices:
            for obj in per_frame_anns[t]:
                if not obj.get("iscrowd", 0):
                    track_cls.setdefault(int(obj["id"]), int(obj["category_id"]))
        track_ids = sorted(track_cls)
        pos = {tid: i for i, tid in enumerate(track_ids)}

        def frame_masks(t, transforms, hw):
            masks = np.zeros((len(track_ids), *hw), dtype=bool)
            for obj in per_frame_anns[t]:
                if obj.get("iscrowd", 0):
                    continue
                m = _decode(obj["segmentation"], h0, w0)
                if m.shape != (h0, w0):
                    raise ValueError(
                        f"video_id {video_id}, frame {t} ({file_names[t]!r}), track {obj['id']}: mask size "
                        f"{m.shape} differs from the video size ({h0}, {w0})"
                    )
                masks[pos[int(obj["id"])]] = transforms.apply_segmentation(m).astype(bool)
            return masks

        images, masks_per_frame = self._read_clip(dataset_dict, frame_indices, len(track_ids), frame_masks, rng)
        track_ids, masks_per_frame = self._drop_empty_targets(track_ids, masks_per_frame)
        classes = [track_cls[tid] for tid in track_ids]
        image_size = tuple(images[0].shape[-2:])
        return {
            "video_id": video_id,
            "height": h0,
            "width": w0,
            "frame_indices": frame_indices,
            "images": images,
            "instances": clip_instances(image_size, track_ids, classes, masks_per_frame),
        }


class LazyVideoFrames:
    """The frames of one video, read and transformed one at a time when iterated.

    Args:
        file_names: the ``L`` frame files.
        augmentations: a detectron2 ``AugmentationList``; its transform is computed on the first frame
            read and reused for every later frame.
        image_format: ``"RGB"`` or ``"BGR"``.
        video_id: for error messages.
        expected_hw: the video's ``(height, width)``; frames of another size raise :class:`FrameReadError`.
        prefetch_frames: frames decoded ahead in a background thread while the model runs on the current one
            (:func:`~local2global.data.prefetch.prefetch`); ``0`` reads every frame on the iterating thread.
    """

    def __init__(self, file_names: Sequence[str], augmentations: T.AugmentationList, image_format: str,
                 video_id, expected_hw: Optional[Sequence[int]] = None, prefetch_frames: int = 2):
        self.file_names = list(file_names)
        self.augmentations = augmentations
        self.image_format = image_format
        self.video_id = video_id
        self.expected_hw = expected_hw
        self.prefetch_frames = int(prefetch_frames)

    def __len__(self) -> int:
        return len(self.file_names)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return prefetch(self._read_all(), self.prefetch_frames, name=f"frames-{self.video_id}")

    def _read_all(self) -> Iterator[torch.Tensor]:
        transforms = None
        for file_name in self.file_names:
            image = read_frame(file_name, self.image_format, self.video_id, self.expected_hw)
            if transforms is None:
                aug_input = T.AugInput(image)
                transforms = self.augmentations(aug_input)
                image = aug_input.image
            else:
                image = transforms.apply_image(image)
            yield _to_chw_tensor(image)

    def __repr__(self) -> str:
        return f"LazyVideoFrames(video_id={self.video_id}, length={len(self)})"


class VideoTestDatasetMapper:
    """Video dataset dict -> test sample (SPEC §5) whose ``frames`` load lazily.

    Args:
        augmentations: test-time augmentations (typically ``[ResizeShortestEdge(360, max_size)]``).
        image_format: ``"RGB"`` or ``"BGR"``.
        prefetch_frames: frames of a video decoded ahead in a background thread (``0``: none; see
            :class:`LazyVideoFrames`). A video is one loader item, so loader workers cannot overlap its decoding
            with the model; this thread does.
    """

    def __init__(self, augmentations: Sequence[T.Augmentation] = (), image_format: str = "RGB",
                 prefetch_frames: int = 2):
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.prefetch_frames = int(prefetch_frames)

    def __call__(self, dataset_dict: dict) -> dict:
        video_id = dataset_dict["video_id"]
        h0, w0 = int(dataset_dict["height"]), int(dataset_dict["width"])
        file_names = list(dataset_dict["file_names"])
        length = int(dataset_dict.get("length", len(file_names)))
        if len(file_names) != length:
            raise ValueError(f"video_id {video_id}: {len(file_names)} file names for a video of length {length}")
        return {
            "video_id": video_id,
            "height": h0,
            "width": w0,
            "length": length,
            "file_names": file_names,
            "frames": LazyVideoFrames(file_names, self.augmentations, self.image_format, video_id, (h0, w0),
                                      self.prefetch_frames),
        }

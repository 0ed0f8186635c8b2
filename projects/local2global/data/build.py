"""Data loaders for video training (mixing videos and COCO pseudo-videos) and whole-video inference.

All functions are LazyCall-able, e.g. in a config::

    dataloader.train = L(build_video_train_loader)(
        dataset=L(get_video_dicts)(names="ytvis_2019_train"),
        mapper=L(VideoClipDatasetMapper)(augmentations=[...], num_frames=4),
        total_batch_size=8,
        pseudo_dataset=L(filter_images_by_category)(
            dataset_dicts=L(get_video_dicts)(names="coco_2017_train"), category_map="ytvis_2019"),
        pseudo_mapper=L(CocoPseudoVideoMapper)(num_frames=4, category_map="ytvis_2019"),
        pseudo_ratio=0.25,
    )
    dataloader.test = L(build_video_test_loader)(
        dataset=L(get_video_dicts)(names="ytvis_2019_val"), mapper=L(VideoTestDatasetMapper)(augmentations=[...]))

The train loader is infinite and yields lists of ``total_batch_size / world_size`` clip dicts; the test
loader yields lists holding one video dict.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch.utils.data as torchdata

from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from local2global.data.categories import coco_category_map
from local2global.data.clip_mapper import seeded_global_numpy

logger = logging.getLogger(__name__)

__all__ = [
    "get_video_dicts",
    "filter_images_by_category",
    "build_video_train_loader",
    "build_video_test_loader",
    "MixedSourceSampler",
    "ResumableSampler",
    "set_train_loader_start_iter",
]


def get_video_dicts(names: Union[str, Sequence[str]]) -> List[dict]:
    """The dataset dicts of one or several registered datasets, concatenated in order.

    Raises:
        KeyError: a name is not registered (detectron2 lists the registered ones).
        ValueError: a dataset is empty.
    """
    if isinstance(names, str):
        names = [names]
    out: List[dict] = []
    for name in names:
        dicts = DatasetCatalog.get(name)
        if not dicts:
            raise ValueError(f"dataset {name!r} is empty")
        logger.info("dataset %s: %d entries", name, len(dicts))
        out.extend(dicts)
    return out


def filter_images_by_category(dataset_dicts: Sequence[dict], category_map: Union[str, Dict[int, int]],
                              category_id_source: str = "contiguous") -> List[dict]:
    """Keep the image dicts (COCO format) with at least one non-crowd object of a mapped category.

    Use it on the pseudo-video source so that every pseudo clip has targets, e.g.
    ``L(filter_images_by_category)(dataset_dicts=L(get_video_dicts)(names="coco_2017_train"),
    category_map="ytvis_2019")``.

    Args:
        dataset_dicts: ``load_coco_json``-style dicts.
        category_map: as :class:`~local2global.data.coco_pseudo_video.CocoPseudoVideoMapper`'s (a vocabulary
            name or ``{category id: target id}``).
        category_id_source: ``"contiguous"`` or ``"dataset"`` ids in the dicts (with a vocabulary name).
    """
    if isinstance(category_map, str):
        category_map = coco_category_map(category_map, category_id_source)
    keys = {int(k) for k in category_map}
    out = [d for d in dataset_dicts
           if any(not o.get("iscrowd", 0) and int(o["category_id"]) in keys for o in d.get("annotations") or [])]
    logger.info("kept %d of %d images with objects of the target categories", len(out), len(dataset_dicts))
    if not out:
        raise ValueError("no image has an object of the target categories (wrong category_id_source?)")
    return out


class MixedSourceSampler(torchdata.Sampler):
    """Infinite index stream over ``[0, n_a)`` (source A) and ``[n_a, n_a + n_b)`` (source B).

    Every draw picks source B with probability ``ratio_b``, then the next index of that source's own
    shuffled, repeating permutation stream (so each source is covered evenly). Like detectron2's
    ``TrainingSampler``, all ranks draw the same global stream from a shared seed and each keeps every
    ``world_size``-th index.

    Args:
        n_a, n_b: sizes of the two sources (``n_b`` may be 0 when ``ratio_b`` is 0).
        ratio_b: probability of drawing from source B, in ``[0, 1]``.
        seed: shared random seed (default: ``comm.shared_random_seed()``).
    """

    def __init__(self, n_a: int, n_b: int, ratio_b: float, seed: Optional[int] = None):
        if not 0.0 <= ratio_b <= 1.0:
            raise ValueError(f"pseudo_ratio must be in [0, 1], got {ratio_b}")
        if (ratio_b < 1.0 and n_a <= 0) or (ratio_b > 0.0 and n_b <= 0):
            raise ValueError(f"a source drawn with positive probability is empty (sizes {n_a}, {n_b}, ratio {ratio_b})")
        self.n_a, self.n_b, self.ratio_b = int(n_a), int(n_b), float(ratio_b)
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()

    @staticmethod
    def _perm_stream(rng: np.random.Generator, n: int) -> Iterator[int]:
        while True:
            yield from rng.permutation(n).tolist()

    def _global_stream(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, 0])
        stream_a = self._perm_stream(np.random.default_rng([self.seed, 1]), self.n_a) if self.n_a else None
        stream_b = self._perm_stream(np.random.default_rng([self.seed, 2]), self.n_b) if self.n_b else None
        while True:
            if rng.random() < self.ratio_b:
                yield self.n_a + next(stream_b)
            else:
                yield next(stream_a)

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._global_stream(), self.rank, None, self.world_size)


class ResumableSampler(torchdata.Sampler):
    """Wraps an infinite per-rank index sampler; yields ``(global position, index)`` pairs from a settable start.

    The stream of the wrapped sampler is a function of its seed only, so skipping the first ``start`` per-rank
    indices (:meth:`set_start`, done by the trainer on ``--resume``) continues exactly where a stopped run
    was. The global position ``p * world_size + rank`` of the ``p``-th per-rank draw keys the random numbers
    of the sample's mapper (see :class:`_PositionSeededDataset`), so a sample's augmentation does not depend on
    the number of processes, data-loader workers or on where the run was resumed.

    Args:
        sampler: an infinite sampler already sliced to this rank (detectron2's ``TrainingSampler``,
            :class:`MixedSourceSampler`).
        batch_size_per_rank: indices consumed per iteration on this rank.
    """

    def __init__(self, sampler: torchdata.Sampler, batch_size_per_rank: int):
        self.sampler = sampler
        self.batch_size_per_rank = int(batch_size_per_rank)
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` per-rank indices of the stream (call before the loader is iterated)."""
        self.start = int(start)

    def __iter__(self):
        for p, idx in enumerate(itertools.islice(iter(self.sampler), self.start, None), start=self.start):
            yield p * self.world_size + self.rank, idx


def _accepts_rng(fn) -> bool:
    try:
        return "rng" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class _PositionSeededDataset(torchdata.Dataset):
    """``dataset[(position, index)]`` = ``mapper(dicts[index], rng=default_rng([seed, position]))``.

    Mappers without an ``rng`` argument run with numpy's global generator seeded from that generator (restored
    afterwards), so every random draw of a training sample is a function of (seed, stream position).
    """

    def __init__(self, dicts: Sequence, mapper: Callable, seed: int):
        self.dicts = list(dicts)
        self.mapper = mapper
        self.seed = int(seed)
        self._pass_rng = _accepts_rng(mapper)

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key):
        position, idx = key
        rng = np.random.default_rng([self.seed, int(position)])
        if self._pass_rng:
            return self.mapper(self.dicts[idx], rng=rng)
        with seeded_global_numpy(rng):
            return self.mapper(self.dicts[idx])


class _SourceMapper:
    """Map a ``(source, dict)`` pair with the mapper of its source (picklable for worker processes)."""

    def __init__(self, mappers: Sequence[Callable[[dict], dict]]):
        self.mappers = list(mappers)
        self._pass_rng = [_accepts_rng(m) for m in self.mappers]

    def __call__(self, item, rng: Optional[np.random.Generator] = None):
        source, dataset_dict = item
        if rng is not None and self._pass_rng[source]:
            return self.mappers[source](dataset_dict, rng=rng)
        with seeded_global_numpy(rng):
            return self.mappers[source](dataset_dict)


def set_train_loader_start_iter(loader, start_iter: int) -> bool:
    """Make a loader of :func:`build_video_train_loader` continue at iteration ``start_iter``.

    Must be called before the loader is iterated. Returns ``False`` (and does nothing) for other loaders.
    """
    sampler = getattr(loader, "l2g_sampler", None)
    if not isinstance(sampler, ResumableSampler):
        return False
    sampler.set_start(int(start_iter) * sampler.batch_size_per_rank)
    logger.info("train loader: continuing the sample stream at iteration %d (per-rank position %d)",
                start_iter, sampler.start)
    return True


def _as_list(dataset) -> list:
    if isinstance(dataset, str):
        return get_video_dicts(dataset)
    return list(dataset)


def build_video_train_loader(
    dataset: Union[str, Sequence[dict]],
    mapper: Callable[[dict], dict],
    total_batch_size: int,
    num_workers: int = 0,
    pseudo_dataset: Union[None, str, Sequence[dict]] = None,
    pseudo_mapper: Optional[Callable[[dict], dict]] = None,
    pseudo_ratio: float = 0.0,
    sampler: Optional[torchdata.Sampler] = None,
    seed: Optional[int] = None,
) -> torchdata.DataLoader:
    """An infinite training loader of clip batches (lists of clip dicts), built on detectron2's loader.

    Args:
        dataset: video dataset dicts (or a registered dataset name).
        mapper: video dict -> clip dict (e.g. :class:`~local2global.data.clip_mapper.VideoClipDatasetMapper`).
        total_batch_size: clips per iteration over all processes (divisible by the world size).
        num_workers: data-loader worker processes.
        pseudo_dataset, pseudo_mapper: optional second source (e.g. COCO dicts and a
            :class:`~local2global.data.coco_pseudo_video.CocoPseudoVideoMapper`).
        pseudo_ratio: probability that a clip comes from the pseudo source (0 disables it).
        sampler: custom infinite per-rank index sampler over ``dataset`` (only without a pseudo source).
        seed: sampler seed (default: a seed shared by all processes, drawn from numpy's global generator,
            which ``train.seed`` fixes).

    Reproducibility and resuming: sample ``p`` of the global index stream is mapped with the random generator
    ``numpy.random.default_rng([seed, p])`` (passed to mappers that take ``rng``, else installed as numpy's
    global state), and :func:`set_train_loader_start_iter` skips the samples of finished iterations, so a
    resumed run sees the same clips, frames and augmentations as an uninterrupted one, for any number of
    workers and processes (with the same total batch size).
    """
    videos = _as_list(dataset)
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world:
        raise ValueError(f"total_batch_size ({total_batch_size}) must be a positive multiple of the number of "
                         f"processes ({world})")
    seed = int(comm.shared_random_seed() if seed is None else seed)
    mixed = pseudo_ratio > 0.0
    if mixed:
        if pseudo_dataset is None or pseudo_mapper is None:
            raise ValueError("pseudo_ratio > 0 needs both pseudo_dataset and pseudo_mapper")
        if sampler is not None:
            raise ValueError("a custom sampler cannot be combined with a pseudo-video source")
        pseudo = _as_list(pseudo_dataset)
        items = [(0, d) for d in videos] + [(1, d) for d in pseudo]
        data = _PositionSeededDataset(items, _SourceMapper([mapper, pseudo_mapper]), seed)
        sampler = MixedSourceSampler(len(videos), len(pseudo), pseudo_ratio, seed=seed)
        logger.info("train loader: %d videos + %d pseudo-video images, pseudo ratio %.3f",
                    len(videos), len(pseudo), pseudo_ratio)
    else:
        if not videos:
            raise ValueError("the training dataset is empty")
        data = _PositionSeededDataset(videos, mapper, seed)
        if sampler is None:
            sampler = TrainingSampler(len(videos), shuffle=True, seed=seed)
    resumable = ResumableSampler(sampler, total_batch_size // world)
    loader = build_detection_train_loader(
        dataset=data, mapper=None, sampler=resumable, total_batch_size=total_batch_size,
        aspect_ratio_grouping=False, num_workers=num_workers,
    )
    loader.l2g_sampler = resumable
    return loader


def build_video_test_loader(dataset: Union[str, Sequence[dict]], mapper: Callable[[dict], dict],
                            num_workers: int = 0) -> torchdata.DataLoader:
    """A finite loader over every video once, in order, batch size 1 (each batch is ``[video dict]``)."""
    return build_detection_test_loader(_as_list(dataset), mapper=mapper, batch_size=1, num_workers=num_workers)

"""The training sample stream is a function of (seed, stream position) (issue 6): resuming at iteration k continues
it exactly, and the number of data-loader workers does not change what is sampled (frames, augmentation)."""

import pytest
import torch

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    pytest.importorskip("local2global.data.synthetic")
    from local2global.data.synthetic import ensure_synthetic_vis
    from local2global.data.ytvis import load_ytvis_json

    root = tmp_path_factory.mktemp("syn") / "synthetic_vis"
    ensure_synthetic_vis(str(root), num_train=3, num_valid=1, min_length=5, max_length=7, num_long=0)
    return load_ytvis_json(str(root / "train.json"), str(root / "train" / "JPEGImages"))


def _loader(videos, num_workers=0, pseudo=False):
    from detectron2.data import transforms as T

    from local2global.data.build import build_video_train_loader
    from local2global.data.clip_mapper import VideoClipDatasetMapper

    augs = [T.ResizeShortestEdge((24, 32, 40), max_size=80, sample_style="choice"), T.RandomFlip()]
    mapper = VideoClipDatasetMapper(augs, num_frames=3, sampling_frame_range=2)
    kw = dict(pseudo_dataset=videos, pseudo_mapper=VideoClipDatasetMapper(augs, num_frames=2), pseudo_ratio=0.5) \
        if pseudo else {}
    return build_video_train_loader(videos, mapper, total_batch_size=2, num_workers=num_workers, seed=5, **kw)


def _signature(batch):
    return [(c["video_id"], tuple(c["frame_indices"]), tuple(c["images"][0].shape), int(c["images"][0].sum()),
             tuple(c["instances"][0].gt_ids.tolist())) for c in batch]


def _take(loader, n, start=0):
    from local2global.data.build import set_train_loader_start_iter

    if start:
        assert set_train_loader_start_iter(loader, start)
    it = iter(loader)
    return [_signature(next(it)) for _ in range(n)]


@pytest.mark.parametrize("pseudo", [False, True], ids=["videos", "mixed"])
def test_resumed_stream_continues_exactly(videos, pseudo):
    full = _take(_loader(videos, pseudo=pseudo), 8)
    assert len({s for b in full for s in b}) > 4  # the stream really varies
    assert _take(_loader(videos, pseudo=pseudo), 3, start=5) == full[5:8]


def test_stream_does_not_depend_on_the_number_of_workers(videos):
    torch.manual_seed(123)  # the workers' own seeds change with it; the samples must not
    assert _take(_loader(videos, num_workers=2), 5) == _take(_loader(videos, num_workers=0), 5)

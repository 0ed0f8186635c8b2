"""Clip / test / pseudo-video mappers and the train / test loaders (SPEC §5 samples)."""

import collections
import copy
import os
import shutil
import time

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from local2global.data import clip_mapper
from local2global.data.build import (
    MixedSourceSampler,
    build_video_test_loader,
    build_video_train_loader,
    filter_images_by_category,
    get_video_dicts,
)
from local2global.data.clip_mapper import (
    FrameReadError,
    VideoClipDatasetMapper,
    VideoTestDatasetMapper,
    sample_frame_indices,
)
from local2global.data.coco_pseudo_video import CocoPseudoVideoMapper
from local2global.data.synthetic import make_synthetic_vis
from local2global.data.ytvis import load_ytvis_json, register_all_builtin

pytestmark = pytest.mark.timeout(120)

H, W = 32, 48
SMALL = dict(seed=11, num_train=4, num_valid=2, height=H, width=W, min_length=6, max_length=12, num_long=1,
             long_length=24)
CLIP_KEYS = {"video_id", "height", "width", "frame_indices", "images", "instances"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("mappers") / "synthetic_vis")
    make_synthetic_vis(r, **SMALL)
    return r


@pytest.fixture(scope="module")
def dicts(root):
    return load_ytvis_json(os.path.join(root, "train.json"), os.path.join(root, "train", "JPEGImages"))


def _rgb(path):
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def _decoded(video, t):
    """{track id: (H0, W0) bool mask} of frame t of a dataset dict."""
    return {o["id"]: mask_utils.decode(o["segmentation"]).astype(bool) for o in video["annotations"][t]}


def _mask_boxes(masks):
    """Reference extents (x1 = min col, y1 = min row, x2 = max col + 1, y2 = max row + 1), zeros if empty."""
    out = []
    for m in masks:
        ys, xs = np.nonzero(m)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
    return np.array(out, dtype=np.float32).reshape(-1, 4)


def _check_clip_structure(clip, num_frames):
    assert set(clip) == CLIP_KEYS
    assert len(clip["images"]) == len(clip["instances"]) == len(clip["frame_indices"]) == num_frames
    size = tuple(clip["images"][0].shape)
    ids0 = clip["instances"][0].gt_ids
    for img, inst in zip(clip["images"], clip["instances"]):
        assert img.dtype == torch.uint8 and tuple(img.shape) == size and size[0] == 3
        assert isinstance(inst, Instances) and inst.image_size == size[1:]
        assert torch.equal(inst.gt_ids, ids0) and inst.gt_ids.dtype == torch.int64
        assert torch.equal(inst.gt_classes, clip["instances"][0].gt_classes) and inst.gt_classes.dtype == torch.int64
        assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.dtype == torch.bool
        assert isinstance(inst.gt_boxes, Boxes) and inst.gt_valid.dtype == torch.bool
        masks = inst.gt_masks.tensor.numpy()
        assert masks.shape == (len(ids0),) + size[1:]
        assert inst.gt_valid.tolist() == masks.reshape(len(masks), -1).any(1).tolist()
        np.testing.assert_array_equal(inst.gt_boxes.tensor.numpy(), _mask_boxes(masks))
    if len(ids0):
        assert ids0.tolist() == sorted(ids0.tolist())
        present_somewhere = torch.stack([i.gt_valid for i in clip["instances"]]).any(0)
        assert present_somewhere.all()  # tracks empty in every frame are dropped


# ----------------------------------------------------------------------------------------------- sampling
def test_frame_sampling_window_and_replacement():
    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = sample_frame_indices(30, 4, 3, rng)
        assert idx == sorted(idx) and len(set(idx)) == 4  # enough frames: no repeats
        assert max(idx) - min(idx) <= 6
    short = [sample_frame_indices(2, 4, 5, rng) for _ in range(50)]
    assert all(len(s) == 4 and set(s) <= {0, 1} and s == sorted(s) for s in short)
    assert any(len(set(s)) == 2 for s in short)
    assert sample_frame_indices(1, 3, 5, rng) == [0, 0, 0]
    refs = collections.Counter(sample_frame_indices(5, 1, 2, rng)[0] for _ in range(500))
    assert set(refs) == set(range(5))


# ----------------------------------------------------------------------------------------------- clip mapper
def test_clip_mapper_values_without_augmentation(dicts):
    mapper = VideoClipDatasetMapper([], num_frames=3, sampling_frame_range=2, seed=0)
    for video in dicts:
        clip = mapper(video)
        _check_clip_structure(clip, 3)
        assert (clip["video_id"], clip["height"], clip["width"]) == (video["video_id"], H, W)
        tracks = sorted({o["id"] for t in clip["frame_indices"] for o in video["annotations"][t]})
        assert clip["instances"][0].gt_ids.tolist() == tracks
        cls = {o["id"]: o["category_id"] for objs in video["annotations"] for o in objs}
        assert clip["instances"][0].gt_classes.tolist() == [cls[i] for i in tracks]
        for t, img, inst in zip(clip["frame_indices"], clip["images"], clip["instances"]):
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), _rgb(video["file_names"][t]))
            ref = _decoded(video, t)
            for k, tid in enumerate(tracks):
                expected = ref.get(tid, np.zeros((H, W), dtype=bool))
                np.testing.assert_array_equal(inst.gt_masks.tensor[k].numpy(), expected)
                assert bool(inst.gt_valid[k]) == (tid in ref)
    # reproducible by seed, and the rng hook gives the same sample for the same generator state
    a = VideoClipDatasetMapper([], num_frames=3, seed=5)(dicts[0])
    b = VideoClipDatasetMapper([], num_frames=3, seed=5)(dicts[0])
    assert a["frame_indices"] == b["frame_indices"]
    c = mapper(dicts[0], rng=np.random.default_rng(9))
    d = mapper(dicts[0], rng=np.random.default_rng(9))
    assert c["frame_indices"] == d["frame_indices"]


def test_flip_applies_to_every_frame(dicts):
    video = max(dicts, key=lambda d: d["length"])
    plain = VideoClipDatasetMapper([], num_frames=4, seed=1)(video)
    flipped = VideoClipDatasetMapper([T.RandomFlip(prob=1.0)], num_frames=4, seed=1)(video)
    assert plain["frame_indices"] == flipped["frame_indices"]
    for a, b, ia, ib in zip(plain["images"], flipped["images"], plain["instances"], flipped["instances"]):
        assert torch.equal(b, a.flip(-1))
        assert torch.equal(ib.gt_masks.tensor, ia.gt_masks.tensor.flip(-1))
        boxes = ia.gt_boxes.tensor.clone()
        boxes[:, [0, 2]] = W - ia.gt_boxes.tensor[:, [2, 0]]
        boxes[~ia.gt_valid] = 0
        assert torch.equal(ib.gt_boxes.tensor, boxes)


def test_resize_and_crop_are_one_transform_for_the_whole_clip(dicts):
    video = max(dicts, key=lambda d: d["length"])
    ch, cw = 40, 52
    augs = [T.ResizeShortestEdge(short_edge_length=48, max_size=1000), T.RandomCrop("absolute", (ch, cw))]
    mapper = VideoClipDatasetMapper(augs, num_frames=4, sampling_frame_range=3)
    resize = T.ResizeTransform(H, W, 48, 72)
    for seed in range(3):
        clip = mapper(video, rng=np.random.default_rng(seed))
        _check_clip_structure(clip, 4)
        resized = [resize.apply_image(_rgb(video["file_names"][t])) for t in clip["frame_indices"]]
        first = clip["images"][0].permute(1, 2, 0).numpy()
        offsets = [(y, x) for y in range(48 - ch + 1) for x in range(72 - cw + 1)
                   if np.array_equal(resized[0][y:y + ch, x:x + cw], first)]
        assert len(offsets) == 1
        y, x = offsets[0]
        for t, img, inst, full in zip(clip["frame_indices"], clip["images"], clip["instances"], resized):
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), full[y:y + ch, x:x + cw])
            ref = _decoded(video, t)
            for k, tid in enumerate(inst.gt_ids.tolist()):
                m = ref.get(tid, np.zeros((H, W), dtype=bool)).astype(np.uint8)
                exp = resize.apply_segmentation(m)[y:y + ch, x:x + cw].astype(bool)
                np.testing.assert_array_equal(inst.gt_masks.tensor[k].numpy(), exp)


def _rect_rle(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": [H, W], "counts": r["counts"]}


def test_tracks_absent_from_the_clip_and_crowds_are_dropped(dicts):
    base = max(dicts, key=lambda d: d["length"])
    n = base["length"]
    video = dict(base)
    video["annotations"] = [[] for _ in range(n)]
    for t in range(n):
        video["annotations"][t].append({"id": 5, "category_id": 2, "iscrowd": 0, "segmentation": _rect_rle(2, 9, 3, 12)})
        video["annotations"][t].append({"id": 8, "category_id": 0, "iscrowd": 1, "segmentation": _rect_rle(0, 5, 0, 5)})
    video["annotations"][n - 1].append({"id": 9, "category_id": 1, "iscrowd": 0, "segmentation": _rect_rle(20, 30, 20, 40)})
    mapper = VideoClipDatasetMapper([], num_frames=2, sampling_frame_range=1)
    seen_late = 0
    for seed in range(40):
        clip = mapper(video, rng=np.random.default_rng(seed))
        _check_clip_structure(clip, 2)
        ids = clip["instances"][0].gt_ids.tolist()
        has_last = (n - 1) in clip["frame_indices"]
        assert ids == ([5, 9] if has_last else [5])
        seen_late += has_last
        if has_last:
            inst = clip["instances"][clip["frame_indices"].index(n - 1)]
            assert inst.gt_valid.tolist() == [True, True]
            assert inst.gt_boxes.tensor[1].tolist() == [20.0, 20.0, 40.0, 30.0]
            assert inst.gt_classes.tolist() == [2, 1]
    assert 0 < seen_late < 40


# ----------------------------------------------------------------------------------------------- test mapper
def test_test_mapper_loads_frames_lazily(dicts, monkeypatch):
    video = max(dicts, key=lambda d: d["length"])
    reads = []
    real = clip_mapper.read_frame

    def counting(file_name, *args, **kwargs):
        reads.append(file_name)
        return real(file_name, *args, **kwargs)

    monkeypatch.setattr(clip_mapper, "read_frame", counting)
    # strictly lazy without read-ahead; the default prefetching stays within its bound (tests/test_prefetch.py)
    sample = VideoTestDatasetMapper([T.ResizeShortestEdge(64, max_size=1000)], prefetch_frames=0)(video)
    assert set(sample) == {"video_id", "height", "width", "length", "file_names", "frames"}
    assert (sample["height"], sample["width"], sample["length"]) == (H, W, video["length"])
    assert len(sample["frames"]) == video["length"] and reads == []
    it = iter(sample["frames"])
    first = next(it)
    assert reads == video["file_names"][:1] and tuple(first.shape) == (3, 64, 96) and first.dtype == torch.uint8
    second = next(it)
    assert reads == video["file_names"][:2]
    expected = T.ResizeTransform(H, W, 64, 96).apply_image(_rgb(video["file_names"][1]))
    np.testing.assert_array_equal(second.permute(1, 2, 0).numpy(), expected)
    rest = list(it)
    assert len(rest) == video["length"] - 2 and reads == video["file_names"]
    reads.clear()
    ahead = iter(VideoTestDatasetMapper([T.ResizeShortestEdge(64, max_size=1000)])(video)["frames"])
    assert reads == []
    next(ahead)
    time.sleep(0.2)
    # one consumed, two queued, one blocked on the full queue: never the whole video
    assert reads == video["file_names"][:len(reads)] and 1 <= len(reads) <= 4 < video["length"]
    ahead.close()


def _video_copy(video, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    files = []
    for f in video["file_names"]:
        dst = folder / os.path.basename(f)
        shutil.copy(f, dst)
        files.append(str(dst))
    v = copy.deepcopy(video)
    v["file_names"] = files
    return v


@pytest.mark.parametrize("damage", ["missing", "corrupt", "wrong_size"])
def test_bad_frame_files_name_the_file_and_video(dicts, tmp_path, damage):
    video = _video_copy(min(dicts, key=lambda d: d["length"]), tmp_path)
    bad = video["file_names"][2]
    if damage == "missing":
        os.remove(bad)
    elif damage == "corrupt":
        with open(bad, "wb") as f:
            f.write(b"\xff\xd8 this is not a jpeg")
    else:
        cv2.imwrite(bad, np.zeros((H + 3, W, 3), dtype=np.uint8))
    pattern = {"missing": "does not exist", "corrupt": "cannot read", "wrong_size": "annotation says"}[damage]
    frames = VideoTestDatasetMapper([])(video)["frames"]
    it = iter(frames)
    next(it), next(it)  # the intact frames load
    with pytest.raises(FrameReadError, match=pattern) as e:
        next(it)
    assert bad in str(e.value) and f"video_id {video['video_id']}" in str(e.value)
    # the clip mapper reports it the same way when it samples that frame
    mapper = VideoClipDatasetMapper([], num_frames=video["length"], sampling_frame_range=video["length"])
    with pytest.raises(FrameReadError) as e:
        mapper(video, rng=np.random.default_rng(0))
    assert bad in str(e.value) and f"video_id {video['video_id']}" in str(e.value)


# ----------------------------------------------------------------------------------------------- pseudo video
def test_coco_pseudo_video_clip(root, dicts):
    video, t = next((v, i) for v in dicts for i, objs in enumerate(v["annotations"]) if len(objs) >= 2)
    objs = video["annotations"][t]
    coco_dict = {
        "file_name": video["file_names"][t], "height": H, "width": W, "image_id": 42,
        "annotations": [
            {"category_id": 0, "iscrowd": 0, "segmentation": objs[0]["segmentation"]},      # person
            {"category_id": 10, "iscrowd": 0, "segmentation": objs[1]["segmentation"]},     # fire hydrant: unmapped
            {"category_id": 16, "iscrowd": 0, "segmentation": [[2.0, 2.0, 20.0, 2.0, 20.0, 14.0, 2.0, 14.0]]},  # dog
            {"category_id": 16, "iscrowd": 1, "segmentation": objs[1]["segmentation"]},     # crowd: dropped
        ],
    }
    mapper = CocoPseudoVideoMapper(num_frames=3, image_size=(24, 40), category_map="ytvis_2019", max_rotation=8,
                                   seed=0)
    clip = mapper(coco_dict)
    _check_clip_structure(clip, 3)
    assert (clip["video_id"], clip["height"], clip["width"], clip["frame_indices"]) == (42, H, W, [0, 1, 2])
    assert tuple(clip["images"][0].shape) == (3, 24, 40)
    assert clip["instances"][0].gt_ids.tolist() == [0, 2]  # annotation indices of the kept objects
    assert clip["instances"][0].gt_classes.tolist() == [0, 7]  # ytvis_2019 contiguous: person 0, dog 7
    assert not torch.equal(clip["images"][0], clip["images"][2])  # the camera moves
    # pixels of a mask follow the image: the warped dog rectangle keeps its mean colour
    src = _rgb(coco_dict["file_name"]).astype(np.float64)
    dog_src = src[2:14, 2:20].reshape(-1, 3).mean(0)
    for img, inst in zip(clip["images"], clip["instances"]):
        if inst.gt_valid[1]:
            m = inst.gt_masks.tensor[1].numpy()
            dog = img.permute(1, 2, 0).numpy()[m].astype(np.float64).mean(0)
            assert np.abs(dog - dog_src).max() < 30
    # raw COCO dataset ids and an explicit map work too
    raw = dict(coco_dict, annotations=[dict(a, category_id={0: 1, 10: 11, 16: 18}[a["category_id"]])
                                       for a in coco_dict["annotations"]])
    clip2 = CocoPseudoVideoMapper(num_frames=2, category_map="ytvis_2019", category_id_source="dataset", seed=0)(raw)
    assert clip2["instances"][0].gt_classes.tolist() == [0, 7] and tuple(clip2["images"][0].shape) == (3, H, W)
    clip3 = CocoPseudoVideoMapper(num_frames=2, image_size=16, category_map={10: 4}, seed=0)(coco_dict)
    assert clip3["instances"][0].gt_ids.tolist() == [1] and clip3["instances"][0].gt_classes.tolist() == [4]
    assert tuple(clip3["images"][0].shape) == (3, 16, 24)


# ----------------------------------------------------------------------------------------------- loaders
class _Tag:
    def __init__(self, tag):
        self.tag = tag

    def __call__(self, d):
        return {"src": self.tag, "i": d["i"]}


def test_mixing_ratio_over_many_draws():
    videos = [{"i": i} for i in range(5)]
    pseudo = [{"i": 100 + i} for i in range(7)]
    loader = build_video_train_loader(videos, _Tag("video"), total_batch_size=4, pseudo_dataset=pseudo,
                                      pseudo_mapper=_Tag("pseudo"), pseudo_ratio=0.3, seed=0)
    it = iter(loader)
    batches = [next(it) for _ in range(600)]
    assert all(isinstance(b, list) and len(b) == 4 for b in batches)
    samples = [s for b in batches for s in b]
    frac = sum(s["src"] == "pseudo" for s in samples) / len(samples)
    assert abs(frac - 0.3) < 0.04, frac
    counts = collections.Counter(s["i"] for s in samples)
    assert set(counts) == set(range(5)) | set(range(100, 107))
    # each source is covered evenly (permutation streams)
    video_counts = [counts[i] for i in range(5)]
    assert max(video_counts) - min(video_counts) <= 1
    # ratio 0: only videos; ratio 1: only pseudo-videos
    only = iter(build_video_train_loader(videos, _Tag("video"), total_batch_size=2, seed=1))
    assert all(s["src"] == "video" for _ in range(20) for s in next(only))
    allp = MixedSourceSampler(5, 7, 1.0, seed=0)
    it = iter(allp)
    assert all(next(it) >= 5 for _ in range(50))
    with pytest.raises(ValueError, match="pseudo_dataset"):
        build_video_train_loader(videos, _Tag("video"), total_batch_size=2, pseudo_ratio=0.5)


def test_loaders_on_registered_synthetic_data(root):
    try:
        register_all_builtin(os.path.dirname(root), synthetic=root)
        cfg = L(build_video_train_loader)(
            dataset=L(get_video_dicts)(names="synthetic_vis_train"),
            mapper=L(VideoClipDatasetMapper)(augmentations=[L(T.RandomFlip)()], num_frames=2),
            total_batch_size=2,
            seed=0,
        )
        batch = next(iter(instantiate(cfg)))
        assert isinstance(batch, list) and len(batch) == 2
        for clip in batch:
            _check_clip_structure(clip, 2)
        test_cfg = L(build_video_test_loader)(
            dataset=L(get_video_dicts)(names=["synthetic_vis_valid"]),
            mapper=L(VideoTestDatasetMapper)(augmentations=[]),
        )
        batches = list(instantiate(test_cfg))
        valid = get_video_dicts("synthetic_vis_valid")
        assert [b[0]["video_id"] for b in batches] == [v["video_id"] for v in valid]
        assert all(len(b) == 1 and len(list(b[0]["frames"])) == b[0]["length"] for b in batches)
        # worker processes: mappers, lazy frames and the mixed sampler survive pickling
        train = build_video_train_loader("synthetic_vis_train", VideoClipDatasetMapper([], num_frames=2, seed=3),
                                         total_batch_size=2, num_workers=2, seed=0,
                                         pseudo_dataset="synthetic_vis_train",
                                         pseudo_mapper=VideoClipDatasetMapper([], num_frames=2, seed=4),
                                         pseudo_ratio=0.5)
        it = iter(train)
        for _ in range(3):
            for clip in next(it):
                _check_clip_structure(clip, 2)
        (first,) = next(iter(build_video_test_loader("synthetic_vis_valid", VideoTestDatasetMapper([]), num_workers=1)))
        assert first["video_id"] == valid[0]["video_id"] and len(list(first["frames"])) == first["length"]
    finally:
        register_all_builtin()


def test_filter_images_by_category():
    imgs = [
        {"image_id": 1, "annotations": [{"category_id": 10, "iscrowd": 0}]},                 # fire hydrant only
        {"image_id": 2, "annotations": [{"category_id": 16, "iscrowd": 0}]},                 # dog
        {"image_id": 3, "annotations": [{"category_id": 0, "iscrowd": 1}]},                  # crowd person only
        {"image_id": 4, "annotations": []},
        {"image_id": 5, "annotations": [{"category_id": 10, "iscrowd": 0}, {"category_id": 0, "iscrowd": 0}]},
    ]
    assert [d["image_id"] for d in filter_images_by_category(imgs, "ytvis_2019")] == [2, 5]
    assert [d["image_id"] for d in filter_images_by_category(imgs, {10: 0})] == [1, 5]
    with pytest.raises(ValueError, match="no image"):
        filter_images_by_category(imgs[:1], "ovis")

"""The built-in synthetic YouTube-VIS generator: determinism, content properties, format, atomic creation."""

import json
import os
import time

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from local2global.data import synthetic
from local2global.data.synthetic import (
    STAMP_NAME,
    ensure_synthetic_vis,
    make_synthetic_vis,
    mask_to_uncompressed_rle,
)
from local2global.data.ytvis import load_ytvis_json
from local2global.evaluation.results_io import load_ground_truth
from local2global.evaluation.ytvis import evaluate_ytvis

pytestmark = pytest.mark.timeout(120)

SMALL = dict(seed=3, num_train=8, num_valid=3, height=48, width=64, min_length=6, max_length=16, num_long=1,
             long_length=40)

OFFICIAL_VIDEO_KEYS = {"id", "width", "height", "length", "file_names", "license", "flickr_url", "coco_url",
                       "date_captured"}
OFFICIAL_ANN_KEYS = {"id", "video_id", "category_id", "iscrowd", "segmentations", "areas", "bboxes", "height",
                     "width", "length"}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn") / "synthetic_vis")
    make_synthetic_vis(root, **SMALL)
    return root


def _read(root, split):
    with open(os.path.join(root, f"{split}.json")) as f:
        return json.load(f)


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _masks(data):
    """{(video_id, track id, frame): bool mask} of every non-null segmentation."""
    vids = {v["id"]: v for v in data["videos"]}
    out = {}
    for a in data["annotations"]:
        v = vids[a["video_id"]]
        for t, seg in enumerate(a["segmentations"]):
            if seg:
                rle = mask_utils.frPyObjects(seg, v["height"], v["width"])
                if isinstance(rle, list):
                    rle = mask_utils.merge(rle)
                out[(a["video_id"], a["id"], t)] = mask_utils.decode(rle).astype(bool)
    return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path, small_root):
    kwargs = dict(SMALL, num_train=3, num_valid=2)
    a, b, c = (str(tmp_path / n) for n in "abc")
    make_synthetic_vis(a, **kwargs)
    make_synthetic_vis(b, **kwargs)
    make_synthetic_vis(c, **dict(kwargs, seed=4))
    ta, tb, tc = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert sorted(ta) == sorted(tb) and len(ta) > 20
    assert all(ta[k] == tb[k] for k in ta)
    assert ta["train.json"] != tc["train.json"]
    assert ta["train/JPEGImages/train_0000/00000.jpg"] != tc["train/JPEGImages/train_0000/00000.jpg"]


def test_official_format_and_pycocotools_round_trip(small_root):
    for split, n_videos in (("train", SMALL["num_train"] + SMALL["num_long"]), ("valid", SMALL["num_valid"])):
        data = _read(small_root, split)
        assert set(data) >= {"info", "licenses", "videos", "categories", "annotations"}
        assert len(data["videos"]) == n_videos and data["annotations"], split
        assert [c["id"] for c in data["categories"]] == [1, 2, 3]
        vids = {v["id"]: v for v in data["videos"]}
        for v in data["videos"]:
            assert set(v) == OFFICIAL_VIDEO_KEYS
            assert len(v["file_names"]) == v["length"] and (v["height"], v["width"]) == (48, 64)
            for f in v["file_names"]:
                assert os.path.isfile(os.path.join(small_root, split, "JPEGImages", f))
        for a in data["annotations"]:
            assert set(a) == OFFICIAL_ANN_KEYS
            v = vids[a["video_id"]]
            assert len(a["segmentations"]) == len(a["areas"]) == len(a["bboxes"]) == v["length"]
            for seg, area, box in zip(a["segmentations"], a["areas"], a["bboxes"]):
                if seg is None:
                    assert area is None and box is None
                    continue
                assert isinstance(seg["counts"], list) and seg["size"] == [48, 64]  # uncompressed, like official
                assert sum(seg["counts"]) == 48 * 64
                rle = mask_utils.frPyObjects(seg, 48, 64)
                m = mask_utils.decode(rle)
                assert int(m.sum()) == area > 0
                assert list(mask_utils.toBbox(rle)) == box
                # uncompressed RLE round trip through our encoder
                assert mask_to_uncompressed_rle(m.astype(bool)) == seg
        # the evaluator's strict ground-truth parser accepts it, and the ground truth scores itself perfectly
        gt = load_ground_truth(os.path.join(small_root, f"{split}.json"))
        assert gt.has_annotations and len(gt.tracks) == len(data["annotations"])
        perfect = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.5 + 0.01 * (i % 7),
                    "segmentations": a["segmentations"]} for i, a in enumerate(data["annotations"])]
        res = evaluate_ytvis(os.path.join(small_root, f"{split}.json"), perfect)
        assert res["AP"] == pytest.approx(1.0) and res["AR10"] == pytest.approx(1.0)


def test_content_properties(small_root):
    data = _read(small_root, "train")
    lengths = [v["length"] for v in data["videos"]]
    assert len(set(lengths)) >= 3 and max(lengths) == SMALL["long_length"] and min(lengths) >= SMALL["min_length"]
    assert {a["category_id"] for a in data["annotations"]} == {1, 2, 3}
    masks = _masks(data)
    by_frame = {}
    for (vid, tid, t), m in masks.items():
        by_frame.setdefault((vid, t), []).append(m)
    # visible masks never overlap (hidden pixels are excluded from the occluded object's mask) ...
    for ms in by_frame.values():
        total = np.sum(ms, axis=0)
        assert total.max() <= 1
    # ... and objects cross: two tracks of a frame with intersecting boxes whose masks touch
    crossings = 0
    for ms in by_frame.values():
        for i in range(len(ms)):
            for j in range(i + 1, len(ms)):
                grown = ms[i] | np.roll(ms[i], 1, 0) | np.roll(ms[i], -1, 0) | np.roll(ms[i], 1, 1) | np.roll(ms[i], -1, 1)
                crossings += int((grown & ms[j]).any())
    assert crossings > 0
    # entry / exit through the border: a null frame next to a frame whose mask touches the border
    border_events = 0
    for a in data["annotations"]:
        segs = a["segmentations"]
        for t in range(len(segs) - 1):
            for absent, present in ((t, t + 1), (t + 1, t)):
                if segs[absent] is None and segs[present] is not None:
                    m = masks[(a["video_id"], a["id"], present)]
                    border_events += int(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
    assert border_events > 0
    # scale changes: some track's area varies by more than 1.5x while fully inside the frame
    ratios = []
    for a in data["annotations"]:
        areas = [x for x in a["areas"] if x]
        ratios.append(max(areas) / min(areas))
    assert max(ratios) > 1.5
    stamp = json.load(open(os.path.join(small_root, STAMP_NAME)))
    assert stamp["config"]["seed"] == 3 and stamp["stats"]["train"]["occluded_frames"] > 0


def test_mask_encodings_load_the_same_masks(tmp_path):
    kwargs = dict(SMALL, num_train=3, num_valid=1, num_long=0)
    loaded = {}
    for fmt in ("rle", "compressed", "polygon"):
        root = str(tmp_path / fmt)
        make_synthetic_vis(root, mask_format=fmt, **kwargs)
        seg0 = next(s for s in _read(root, "train")["annotations"][0]["segmentations"] if s)
        assert {"rle": list, "compressed": str, "polygon": list}[fmt] is type(seg0 if fmt == "polygon" else seg0["counts"])
        dicts = load_ytvis_json(os.path.join(root, "train.json"), os.path.join(root, "train", "JPEGImages"))
        loaded[fmt] = {(d["video_id"], o["id"], t): mask_utils.decode(o["segmentation"]).astype(bool)
                       for d in dicts for t, objs in enumerate(d["annotations"]) for o in objs}
    assert loaded["rle"].keys() == loaded["compressed"].keys() and len(loaded["rle"]) > 20
    assert all(np.array_equal(loaded["rle"][k], loaded["compressed"][k]) for k in loaded["rle"])
    # polygons trace the same masks: the same objects, the same pixels except filled holes (COCO polygons
    # cannot express holes; a hole appears when a small object lies inside a larger one's outline)
    assert loaded["polygon"].keys() == loaded["rle"].keys()
    exact = sum(np.array_equal(loaded["rle"][k], loaded["polygon"][k]) for k in loaded["rle"])
    assert exact >= 0.9 * len(loaded["rle"])
    for k, m in loaded["rle"].items():
        assert not (m & ~loaded["polygon"][k]).any()  # never loses a pixel


def test_ensure_is_idempotent_and_checks_parameters(tmp_path):
    root = str(tmp_path / "ds")
    kwargs = dict(SMALL, num_train=2, num_valid=1, num_long=0)
    assert ensure_synthetic_vis(root, **kwargs) == os.path.abspath(root)
    stamp_path = os.path.join(root, STAMP_NAME)
    mtime = os.stat(stamp_path).st_mtime_ns
    ensure_synthetic_vis(root, **kwargs)
    ensure_synthetic_vis(root)  # no parameters: any complete dataset is accepted
    assert os.stat(stamp_path).st_mtime_ns == mtime
    with pytest.raises(ValueError, match="different parameters"):
        ensure_synthetic_vis(root, **dict(kwargs, seed=99))
    other = tmp_path / "not_a_dataset"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="no complete synthetic dataset"):
        ensure_synthetic_vis(str(other), **kwargs)
    assert (other / "keep.txt").read_text() == "user data"


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    root = str(tmp_path / "ds")
    kwargs = dict(SMALL, num_train=2, num_valid=1, num_long=0)
    real = synthetic._write_split

    def crash_on_valid(tmp_root, split, cfg, split_seed, **split_kwargs):
        if split == "valid":
            raise KeyboardInterrupt("simulated interruption")
        return real(tmp_root, split, cfg, split_seed, **split_kwargs)

    monkeypatch.setattr(synthetic, "_write_split", crash_on_valid)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_vis(root, **kwargs)
    assert not os.path.exists(root)
    assert os.listdir(tmp_path) == []  # the partial folder was removed
    monkeypatch.setattr(synthetic, "_write_split", real)
    ensure_synthetic_vis(root, **kwargs)
    assert synthetic.is_complete(root)


def test_cli_and_default_dataset_is_fast(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_synthetic_vis", os.path.join(os.path.dirname(__file__), "..", "scripts", "make_synthetic_vis.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = str(tmp_path / "cli")
    assert cli.main(["--output", out, "--num-train", "2", "--num-valid", "1", "--num-long", "0", "--height", "32",
                     "--width", "40", "--mask-format", "compressed", "--seed", "7"]) == 0
    stamp = json.load(open(os.path.join(out, STAMP_NAME)))
    assert stamp["config"]["mask_format"] == "compressed" and stamp["config"]["height"] == 32
    assert isinstance(_read(out, "valid")["annotations"][0]["segmentations"], list)
    # the default dataset (all defaults: 320 + 2 long training videos, 24 held-out ones); its generation time is
    # printed (reported in the closing note), not asserted
    t0 = time.perf_counter()
    stamp = make_synthetic_vis(str(tmp_path / "default"))
    print(f"default synthetic dataset made in {time.perf_counter() - t0:.1f} s")
    assert stamp["stats"]["train"]["videos"] == 322 and stamp["stats"]["valid"]["videos"] == 24
    assert max(v["length"] for v in _read(str(tmp_path / "default"), "train")["videos"]) == 120


def test_concurrent_callers_keep_the_first_complete_dataset(tmp_path, monkeypatch):
    root = str(tmp_path / "ds")
    kwargs = dict(SMALL, num_train=2, num_valid=1, num_long=0)
    real = synthetic._write_split
    state = {"raced": False}

    def competitor_finishes_first(tmp_root, split, cfg, split_seed, **split_kwargs):
        if not state["raced"]:
            state["raced"] = True
            make_synthetic_vis(root, **kwargs)  # another process completes while we are still writing
        return real(tmp_root, split, cfg, split_seed, **split_kwargs)

    monkeypatch.setattr(synthetic, "_write_split", competitor_finishes_first)
    assert ensure_synthetic_vis(root, **kwargs) == os.path.abspath(root)
    assert synthetic.is_complete(root) and os.listdir(tmp_path) == ["ds"]

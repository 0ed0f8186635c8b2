"""The synthetic video panoptic dataset: VIPSeg's on-disk format read by the project's real VIPSeg loaders (both
layouts), its content, determinism by seed, the completion stamp, registration, and VPQ / STQ of the ground truth
against itself."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from local2global.data.synthetic_vps import (
    STAMP_NAME,
    STUFF_CLASSES,
    SYNTHETIC_VPS_CATEGORIES,
    SyntheticVPSConfig,
    ensure_synthetic_vps,
    make_synthetic_vps,
    read_stamp,
    register_synthetic_vps,
    synthetic_vps_metadata,
)
from local2global.data.vipseg import load_vipseg_panoptic_json, load_vipseg_raw, read_panoptic_frame
from local2global.data.vps_mapper import STUFF_TARGET_ID_OFFSET, VideoPanopticClipMapper
from local2global.evaluation.vps.evaluate import evaluate_vps

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_train=3, num_valid=2, min_length=6, max_length=9)
THINGS = {c["id"] for c in SYNTHETIC_VPS_CATEGORIES if c["isthing"]}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vps") / "synthetic_vps"
    make_synthetic_vps(str(root), **SMALL)
    return root


def _p720(root: Path):
    p = root / "VIPSeg_720P"
    return p, str(p / "images"), str(p / "panomasksRGB")


def _tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_categories_are_vipseg_style():
    assert [c["id"] for c in SYNTHETIC_VPS_CATEGORIES] == list(range(7))
    assert [c["name"] for c in SYNTHETIC_VPS_CATEGORIES if not c["isthing"]] == list(STUFF_CLASSES)
    assert [c["name"] for c in SYNTHETIC_VPS_CATEGORIES if c["isthing"]] == \
        ["striped_disk", "checkered_square", "dotted_triangle"]
    assert len({tuple(c["color"]) for c in SYNTHETIC_VPS_CATEGORIES}) == 7  # stuff ids are the colours: unique
    meta = synthetic_vps_metadata()
    assert meta["thing_dataset_id_to_contiguous_id"] == {4: 4, 5: 5, 6: 6}
    assert meta["stuff_dataset_id_to_contiguous_id"] == {i: i for i in range(7)}


def test_layout_and_json_structure(small):
    assert sorted(os.listdir(small)) == ["VIPSeg_720P", "imgs", "panomasks", STAMP_NAME, "train.txt", "val.txt"]
    assert (small / "train.txt").read_text().split() == ["train_0000", "train_0001", "train_0002"]
    assert (small / "val.txt").read_text().split() == ["val_0000", "val_0001"]
    p720, _, _ = _p720(small)
    assert {"images", "panomasks", "panomasksRGB", "panoptic_gt_VIPSeg.json", "panoptic_gt_VIPSeg_train.json",
            "panoptic_gt_VIPSeg_val.json", "panoVIPSeg_categories.json"} <= set(os.listdir(p720))
    d = json.loads((p720 / "panoptic_gt_VIPSeg_val.json").read_text())
    assert [v["video_id"] for v in d["videos"]] == ["val_0000", "val_0001"]
    assert d["videos"][0]["images"][0] == {"id": "00000000", "width": 96, "height": 64, "file_name": "00000000.png"}
    assert [c["id"] for c in d["categories"]] == list(range(7))
    seg = d["annotations"][0]["annotations"][0]["segments_info"][0]
    assert set(seg) == {"id", "category_id", "iscrowd", "area"} and seg["iscrowd"] == 0
    raw = np.asarray(Image.open(small / "panomasks" / "val_0000" / "00000000.png"))
    assert raw.dtype == np.uint16 and raw.shape == (64, 96)
    # VIPSeg's raw encoding: stuff c + 1 (1..4), things (c + 1) * 100 + instance, void 0
    values = set(np.unique(raw).tolist())
    assert 0 in values and values & {1, 2, 3, 4}
    assert all(v < 5 or (v // 100 - 1) in THINGS for v in values)


def test_loads_through_both_vipseg_loaders_and_they_agree(small):
    p720, images, gt_root = _p720(small)
    for split, n in (("train", 3), ("val", 2)):
        rgb = load_vipseg_panoptic_json(str(p720 / f"panoptic_gt_VIPSeg_{split}.json"), images, gt_root,
                                        check_masks=True)
        raw = load_vipseg_raw(str(small), split, categories=SYNTHETIC_VPS_CATEGORIES)
        assert len(rgb) == len(raw) == n
        for a, b in zip(rgb, raw):
            assert a["video_name"] == b["video_name"] and a["length"] == b["length"] >= 6
            assert (a["height"], a["width"]) == (b["height"], b["width"]) == (64, 96)
            thing_ids = set()
            for t in range(a["length"]):
                ia, ib = read_panoptic_frame(a, t), read_panoptic_frame(b, t)
                # the same partition of the frame: a one-to-one map between the two layouts' ids
                pairs = set(zip(ia.ravel().tolist(), ib.ravel().tolist()))
                assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})
                assert ((ia == 0) == (ib == 0)).all() and (ia == 0).any()  # void on the band boundaries
                cats_a = sorted((s["category_id"], s["area"]) for s in a["annotations"][t])
                cats_b = sorted((s["category_id"], s["area"]) for s in b["annotations"][t])
                assert cats_a == cats_b
                stuff = [s for s in a["annotations"][t] if not s["isthing"]]
                assert len(stuff) >= 2 and all(s["category_id"] < len(STUFF_CLASSES) for s in stuff)
                colours = {c["id"]: c["color"] for c in SYNTHETIC_VPS_CATEGORIES}
                for s in stuff:  # a stuff segment's RGB id is its category colour
                    r, g, bl = colours[s["category_id"]]
                    assert s["id"] == r + 256 * g + 65536 * bl
                thing_ids |= {(s["id"], s["category_id"]) for s in a["annotations"][t] if s["isthing"]}
            assert thing_ids and all(c in THINGS for _, c in thing_ids)
            assert len({i for i, _ in thing_ids}) == len(thing_ids)  # an object keeps its id and class over the video


def test_deterministic_by_seed(small, tmp_path):
    again = tmp_path / "again"
    make_synthetic_vps(str(again), **SMALL)
    assert _tree_hashes(again) == _tree_hashes(small)
    other = tmp_path / "other"
    make_synthetic_vps(str(other), seed=1, **SMALL)
    a, b = _tree_hashes(other), _tree_hashes(small)
    assert a.keys() != b.keys() or any(a[k] != b[k] for k in a if k.startswith("imgs/"))


def test_stamp_and_ensure(small, tmp_path):
    stamp = read_stamp(str(small))
    assert stamp["config"] == dict(vars(SyntheticVPSConfig(**SMALL)))
    assert stamp["stats"]["val"]["videos"] == 2 and stamp["stats"]["train"]["frames"] >= 18
    assert 0 < stamp["stats"]["train"]["void_pixels"] < 0.1 * stamp["stats"]["train"]["pixels"]
    assert ensure_synthetic_vps(str(small), **SMALL) == str(small)  # accepted as it is
    assert ensure_synthetic_vps(str(small)) == str(small)
    with pytest.raises(ValueError, match="num_valid"):
        ensure_synthetic_vps(str(small), num_valid=3)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x").write_text("not a dataset")
    with pytest.raises(FileExistsError, match="no complete synthetic VPS dataset"):
        ensure_synthetic_vps(str(junk))
    with pytest.raises(FileExistsError):
        make_synthetic_vps(str(small), **SMALL)
    made = ensure_synthetic_vps(str(tmp_path / "fresh"), num_train=1, num_valid=0, min_length=2, max_length=2)
    assert read_stamp(made)["stats"]["train"]["frames"] == 2
    assert not [p for p in os.listdir(tmp_path) if ".partial" in p]


def test_ground_truth_scores_100_against_itself(small):
    p720, _, gt_root = _p720(small)
    gt_json = str(p720 / "panoptic_gt_VIPSeg_val.json")
    res = evaluate_vps(gt_json, gt_root, gt_json, gt_root)
    for key in ("VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "SQ"):
        assert res[key] == pytest.approx(100.0), key
    assert res["num_videos"] == 2


def test_registered_datasets_and_the_evaluator_score_100(small, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from local2global.evaluation.vps import VPSEvaluator

    names = register_synthetic_vps(str(small))
    try:
        assert set(names) == {"synthetic_vps_train", "synthetic_vps_valid", "synthetic_vps_raw_train",
                              "synthetic_vps_raw_valid"}
        valid = DatasetCatalog.get("synthetic_vps_valid")
        assert [r["video_name"] for r in valid] == ["val_0000", "val_0001"]
        assert [r["video_name"] for r in DatasetCatalog.get("synthetic_vps_raw_train")] == \
            ["train_0000", "train_0001", "train_0002"]
        meta = MetadataCatalog.get("synthetic_vps_valid")
        assert meta.evaluator_type == "vps" and meta.thing_classes[4] == "striped_disk"
        ev = VPSEvaluator("synthetic_vps_valid", output_dir=str(tmp_path / "eval"), distributed=False)
        ev.reset()
        for rec in valid:  # the ground truth in the model-output contract (contiguous classes)
            maps = [read_panoptic_frame(rec, t) for t in range(rec["length"])]
            segs = [[{"id": s["id"], "category_id": s["category_id"]} for s in fr] for fr in rec["annotations"]]
            ev.process([{"video_id": rec["video_id"]}], [{"video_id": rec["video_id"], "panoptic_seg": maps,
                                                          "segments_info": segs}])
        res = ev.evaluate()["vps"]
        assert res["VPQ"] == pytest.approx(100.0) and res["STQ"] == pytest.approx(100.0)
    finally:
        register_synthetic_vps()


def test_panoptic_clip_mapper_reads_it(small):
    p720, images, gt_root = _p720(small)
    rec = load_vipseg_panoptic_json(str(p720 / "panoptic_gt_VIPSeg_train.json"), images, gt_root)[0]
    clip = VideoPanopticClipMapper(num_frames=3, sampling_frame_range=3, seed=0)(rec)
    inst = clip["instances"][0]
    is_thing = inst.gt_is_thing.tolist()
    ids, classes = inst.gt_ids.tolist(), inst.gt_classes.tolist()
    assert any(is_thing) and not all(is_thing)
    for tid, cls, thing in zip(ids, classes, is_thing):
        assert thing == (cls in THINGS)
        if not thing:
            assert tid == STUFF_TARGET_ID_OFFSET + cls
    # every labelled pixel belongs to exactly one target
    masks = inst.gt_masks.tensor.numpy()
    assert masks.sum(0).max() == 1


def test_script_writes_the_dataset(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic_vps.py"), "--output", str(out),
                           "--num-train", "1", "--num-valid", "1", "--min-length", "2", "--max-length", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_stamp(str(out))["config"]["num_valid"] == 1 and "statistics" in proc.stderr

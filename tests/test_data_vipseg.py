"""VIPSeg data: categories, raw encoding, both loaders, the raw -> 720p converter, bad inputs.

Data are written here in the exact official layouts (raw ``imgs`` / 16-bit ``panomasks`` / ``<split>.txt``;
720p ``images`` / ``panomasksRGB`` / ``panoptic_gt_VIPSeg_<split>.json``).
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from local2global.data.vipseg import (
    VIPSegFormatError,
    load_vipseg_panoptic_json,
    load_vipseg_raw,
    raw_to_segment_ids,
    read_panoptic_frame,
    register_all_vipseg,
)
from local2global.data.vipseg_categories import VIPSEG_CATEGORIES, raw_to_category, vipseg_metadata
from local2global.data.vipseg_convert import convert_vipseg_to_720p

PERSON, CAR, WALL, SKY = 60, 48, 0, 28  # 0-based JSON ids (raw: +1)


def write_raw_vipseg(root, videos=None, size=(40, 60)):
    """Raw layout with 2 videos: stuff (wall, sky), two persons, a car; frames 00000001.jpg ... 16-bit PNGs."""
    h, w = size
    videos = videos or {"vid_a": 3, "vid_b": 2}
    for name, T in videos.items():
        os.makedirs(os.path.join(root, "imgs", name))
        os.makedirs(os.path.join(root, "panomasks", name))
        for t in range(T):
            raw = np.zeros((h, w), np.uint16)
            raw[: h // 2] = SKY + 1
            raw[h // 2:] = WALL + 1
            raw[5:15, 5 + t:15 + t] = (PERSON + 1) * 100 + 0  # 6100
            raw[20:30, 30:40] = (PERSON + 1) * 100 + 1  # 6101
            if t % 2 == 0:
                raw[30:38, 2:12] = (CAR + 1) * 100 + 3  # 4903
            raw[0, 0] = 0  # a void pixel
            stem = f"{t + 1:08d}"
            Image.fromarray(raw).save(os.path.join(root, "panomasks", name, stem + ".png"))
            img = (np.random.default_rng(t).random((h, w, 3)) * 255).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(root, "imgs", name, stem + ".jpg"))
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("vid_a\n")
    with open(os.path.join(root, "val.txt"), "w") as f:
        f.write("vid_b\n")
    return root


def test_categories_transcribed():
    assert len(VIPSEG_CATEGORIES) == 124
    assert sum(c["isthing"] for c in VIPSEG_CATEGORIES) == 58
    assert VIPSEG_CATEGORIES[PERSON]["name"] == "person" and VIPSEG_CATEGORIES[PERSON]["isthing"] == 1
    assert VIPSEG_CATEGORIES[0]["name"] == "wall" and VIPSEG_CATEGORIES[123]["name"] == "train"
    assert VIPSEG_CATEGORIES[SKY]["name"] == "sky" and VIPSEG_CATEGORIES[SKY]["isthing"] == 0
    meta = vipseg_metadata()
    assert len(meta["thing_dataset_id_to_contiguous_id"]) == 58
    assert meta["stuff_dataset_id_to_contiguous_id"][123] == 123


def test_raw_encoding_off_by_one():
    raw = np.array([0, 1, 29, 61, 124, 6100, 6101, 4903, 12499])
    np.testing.assert_array_equal(raw_to_category(raw), [-1, 0, 28, 60, 123, 60, 60, 48, 123])
    # stuff -> category + 1 (all raw values of a stuff category merge); things keep the raw value
    np.testing.assert_array_equal(raw_to_segment_ids(np.array([0, 1, 29, 6100, 4903, 61])), [0, 1, 29, 6100, 4903, 61])
    with pytest.raises(ValueError, match="12500"):
        raw_to_segment_ids(np.array([12500]))


def test_raw_loader(tmp_path):
    root = write_raw_vipseg(str(tmp_path / "VIPSeg"))
    recs = load_vipseg_raw(root, "train")
    assert [r["video_name"] for r in recs] == ["vid_a"]
    r = recs[0]
    assert (r["length"], r["height"], r["width"]) == (3, 40, 60)
    segs0 = {s["id"]: s for s in r["annotations"][0]}
    assert set(segs0) == {SKY + 1, WALL + 1, 6100, 6101, 4903}
    assert segs0[6100]["category_id"] == PERSON and segs0[6100]["isthing"] is True
    assert segs0[SKY + 1]["isthing"] is False and segs0[SKY + 1]["area"] == 20 * 60 - 1 - 100
    assert 4903 not in {s["id"] for s in r["annotations"][1]}  # the car is absent on odd frames
    ids = read_panoptic_frame(r, 1)
    assert ids[0, 0] == 0 and ids[10, 10] == 6100 and ids[25, 35] == 6101


def test_convert_and_720p_loader(tmp_path):
    root = write_raw_vipseg(str(tmp_path / "VIPSeg"))
    out = str(tmp_path / "VIPSeg" / "VIPSeg_720P")
    written = convert_vipseg_to_720p(root, out, target_height=20)
    assert set(written) == {"all", "train", "val"}
    with open(written["all"]) as f:
        d = json.load(f)
    assert [v["video_id"] for v in d["videos"]] == ["vid_a", "vid_b"]
    assert d["videos"][0]["images"][0] == {"id": "00000001", "width": 30, "height": 20, "file_name": "00000001.png"}
    recs = load_vipseg_panoptic_json(written["train"], os.path.join(out, "images"), os.path.join(out, "panomasksRGB"),
                                     check_masks=True)
    assert len(recs) == 1 and recs[0]["video_name"] == "vid_a" and recs[0]["length"] == 3
    segs = [{s["category_id"]: s for s in fr} for fr in recs[0]["annotations"]]
    # stuff ids are the category colours (panopticapi); the thing ids stay the same over the video
    sky = VIPSEG_CATEGORIES[SKY]["color"]
    assert segs[0][SKY]["id"] == sky[0] + 256 * sky[1] + 65536 * sky[2]
    persons = [sorted(s["id"] for s in fr if s["category_id"] == PERSON) for fr in recs[0]["annotations"]]
    assert persons[0] == persons[1] == persons[2] and len(persons[0]) == 2
    assert CAR in segs[0] and CAR not in segs[1] and segs[0][CAR]["id"] == segs[2][CAR]["id"]
    # deterministic: a second conversion writes the same JSON
    again = convert_vipseg_to_720p(root, str(tmp_path / "again"), target_height=20)
    with open(again["all"]) as f:
        assert json.load(f) == d


def test_official_layout_registration(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    root = write_raw_vipseg(str(tmp_path / "VIPSeg"))
    convert_vipseg_to_720p(root, os.path.join(root, "VIPSeg_720P"), target_height=20)
    names = register_all_vipseg(str(tmp_path))
    try:
        assert set(names) == {"vipseg_train", "vipseg_val", "vipseg_raw_train", "vipseg_raw_val"}
        val = DatasetCatalog.get("vipseg_val")
        assert [r["video_name"] for r in val] == ["vid_b"] and val[0]["pan_seg_format"] == "rgb"
        assert DatasetCatalog.get("vipseg_raw_val")[0]["length"] == 2
        meta = MetadataCatalog.get("vipseg_val")
        assert meta.evaluator_type == "vps" and meta.panoptic_json.endswith("panoptic_gt_VIPSeg_val.json")
    finally:
        register_all_vipseg()


def _converted(tmp_path):
    root = write_raw_vipseg(str(tmp_path / "VIPSeg"))
    out = str(tmp_path / "VIPSeg" / "VIPSeg_720P")
    written = convert_vipseg_to_720p(root, out, target_height=20)
    return root, out, written


def test_bad_unknown_category(tmp_path):
    root, out, written = _converted(tmp_path)
    with open(written["train"]) as f:
        d = json.load(f)
    d["annotations"][0]["annotations"][1]["segments_info"][0]["category_id"] = 124
    bad = str(tmp_path / "bad.json")
    with open(bad, "w") as f:
        json.dump(d, f)
    with pytest.raises(VIPSegFormatError, match=r"vid_a.*00000002\.png.*unknown category_id 124"):
        load_vipseg_panoptic_json(bad, os.path.join(out, "images"), os.path.join(out, "panomasksRGB"))
    # raw layout: a raw value of no category
    m = os.path.join(root, "panomasks", "vid_a", "00000002.png")
    raw = np.array(Image.open(m))
    raw[1, 1] = 12600
    Image.fromarray(raw).save(m)
    with pytest.raises(VIPSegFormatError, match=r"vid_a.*00000002\.png.*12600"):
        load_vipseg_raw(root, "train")


def test_bad_png_does_not_match_json(tmp_path):
    _, out, written = _converted(tmp_path)
    with open(written["train"]) as f:
        d = json.load(f)
    d["annotations"][0]["annotations"][2]["segments_info"].pop(0)
    bad = str(tmp_path / "bad.json")
    with open(bad, "w") as f:
        json.dump(d, f)
    recs = load_vipseg_panoptic_json(bad, os.path.join(out, "images"), os.path.join(out, "panomasksRGB"))
    with pytest.raises(VIPSegFormatError, match=r"vid_a.*00000003\.png.*does not match.*only in the PNG \[\d+\]"):
        read_panoptic_frame(recs[0], 2)
    with pytest.raises(VIPSegFormatError, match="only in the PNG"):
        load_vipseg_panoptic_json(bad, os.path.join(out, "images"), os.path.join(out, "panomasksRGB"), check_masks=True)
    d["annotations"][0]["annotations"][2]["segments_info"] = json.load(open(written["train"]))["annotations"][0][
        "annotations"][2]["segments_info"]
    d["annotations"][0]["annotations"][2]["segments_info"][0]["area"] += 1
    with open(bad, "w") as f:
        json.dump(d, f)
    recs = load_vipseg_panoptic_json(bad, os.path.join(out, "images"), os.path.join(out, "panomasksRGB"))
    with pytest.raises(VIPSegFormatError, match="JSON area different"):
        read_panoptic_frame(recs[0], 2)


def test_bad_missing_frame(tmp_path):
    root, out, written = _converted(tmp_path)
    os.remove(os.path.join(out, "panomasksRGB", "vid_a", "00000002.png"))
    with pytest.raises(VIPSegFormatError, match=r"vid_a.*missing panoptic PNG .*00000002\.png"):
        load_vipseg_panoptic_json(written["train"], os.path.join(out, "images"), os.path.join(out, "panomasksRGB"))
    os.remove(os.path.join(root, "panomasks", "vid_b", "00000001.png"))
    with pytest.raises(VIPSegFormatError, match=r"vid_b.*missing frame .*panomasks/vid_b/00000001\.png"):
        load_vipseg_raw(root, "val")

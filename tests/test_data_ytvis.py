"""YouTube-VIS / OVIS categories, the validating JSON loader, and dataset registration."""

import json
import os
import shutil

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from local2global.data import categories as C
from local2global.data.synthetic import make_synthetic_vis, mask_to_uncompressed_rle
from local2global.data.ytvis import (
    YTVISFormatError,
    load_ytvis_json,
    register_all_builtin,
    register_ytvis_instances,
)

pytestmark = pytest.mark.timeout(120)

SMALL = dict(seed=5, num_train=3, num_valid=2, height=32, width=48, min_length=5, max_length=9, num_long=0)


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ytvis") / "synthetic_vis")
    make_synthetic_vis(root, **SMALL)
    return root


@pytest.fixture
def restore_registrations():
    yield
    register_all_builtin()  # back to the environment's roots


# ----------------------------------------------------------------------------------------------- categories
def test_category_counts_and_known_entries():
    assert [len(C.YTVIS_2019_CATEGORIES), len(C.YTVIS_2021_CATEGORIES), len(C.YTVIS_2022_CATEGORIES),
            len(C.OVIS_CATEGORIES)] == [40, 40, 40, 25]
    for cats in (C.YTVIS_2019_CATEGORIES, C.YTVIS_2021_CATEGORIES, C.OVIS_CATEGORIES):
        assert [c["id"] for c in cats] == list(range(1, len(cats) + 1))
        assert len({c["name"] for c in cats}) == len(cats)
    n19 = {c["id"]: c["name"] for c in C.YTVIS_2019_CATEGORIES}
    n21 = {c["id"]: c["name"] for c in C.YTVIS_2021_CATEGORIES}
    novis = {c["id"]: c["name"] for c in C.OVIS_CATEGORIES}
    assert (n19[1], n19[2], n19[11], n19[26], n19[39], n19[40]) == (
        "person", "giant_panda", "hand", "owl", "earless_seal", "tennis_racket")
    assert (n21[1], n21[3], n21[14], n21[26], n21[32], n21[39], n21[40]) == (
        "airplane", "bird", "flying_disc", "person", "squirrel", "whale", "zebra")
    assert (novis[1], novis[6], novis[12], novis[13], novis[21], novis[25]) == (
        "Person", "Sheep", "Poultry", "Giant_panda", "Bicycle", "Vehical")
    assert C.YTVIS_2022_CATEGORIES == C.YTVIS_2021_CATEGORIES
    md = C.vis_metadata("ytvis_2019_train")
    assert md["thing_classes"][0] == "person" and md["thing_dataset_id_to_contiguous_id"][40] == 39
    assert len(md["thing_colors"]) == 40 and C.vis_metadata("ovis")["thing_classes"][-1] == "Vehical"
    assert C.thing_dataset_id_to_contiguous_id([{"id": 7}, {"id": 3}]) == {3: 0, 7: 1}
    assert C.thing_classes([{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]) == ["a", "b"]


# COCO name -> target name where the two vocabularies name the same thing differently
ALIASES = {
    "ytvis_2019": {"bicycle": "motorbike", "motorcycle": "motorbike", "car": "sedan", "skis": "snowboard"},
    "ytvis_2021": {"bicycle": "motorbike", "motorcycle": "motorbike", "frisbee": "flying_disc", "skis": "snowboard"},
    "ovis": {"car": "vehical", "bus": "vehical", "truck": "vehical"},
}


@pytest.mark.parametrize("target,coco_map,size", [
    ("ytvis_2019", C.COCO_TO_YTVIS_2019, 21), ("ytvis_2021", C.COCO_TO_YTVIS_2021, 23), ("ovis", C.COCO_TO_OVIS, 17)])
def test_coco_maps_connect_same_named_classes(target, coco_map, size):
    assert len(coco_map) == size
    coco_names = {c["id"]: c["name"].replace(" ", "_") for c in COCO_CATEGORIES if c["isthing"]}
    target_names = {c["id"]: c["name"].lower() for c in C.get_categories(target)}
    for coco_id, tid in coco_map.items():
        src = coco_names[coco_id]
        assert ALIASES[target].get(src, src) == target_names[tid], (coco_id, src, target_names[tid])
    # contiguous variants: COCO contiguous "dog" (16) -> the target's contiguous "dog"
    contig = C.coco_category_map(target, source_ids="contiguous")
    dataset = C.coco_category_map(target, source_ids="dataset")
    assert len(contig) == len(dataset) == size
    dog = C.thing_classes(C.get_categories(target)).index("dog" if target != "ovis" else "Dog")
    assert contig[16] == dataset[18] == dog
    assert contig[0] == dataset[1] == C.thing_classes(C.get_categories(target)).index(
        "person" if target != "ovis" else "Person")


# ----------------------------------------------------------------------------------------------- loader
def test_loader_dataset_dicts(syn_root):
    jf, ir = os.path.join(syn_root, "train.json"), os.path.join(syn_root, "train", "JPEGImages")
    data = json.load(open(jf))
    dicts = load_ytvis_json(jf, ir)
    assert [d["video_id"] for d in dicts] == sorted(v["id"] for v in data["videos"])
    for d in dicts:
        v = next(v for v in data["videos"] if v["id"] == d["video_id"])
        assert d["length"] == v["length"] == len(d["file_names"]) == len(d["annotations"])
        assert all(os.path.isabs(f) and os.path.isfile(f) for f in d["file_names"])
        anns = [a for a in data["annotations"] if a["video_id"] == v["id"]]
        for t, objs in enumerate(d["annotations"]):
            present = [a for a in anns if a["segmentations"][t] is not None]
            assert [o["id"] for o in objs] == [a["id"] for a in present]  # null frames omitted
            for o, a in zip(objs, present):
                assert o["category_id"] == a["category_id"] - 1  # contiguous
                ref = mask_utils.decode(mask_utils.frPyObjects(a["segmentations"][t], v["height"], v["width"]))
                assert np.array_equal(mask_utils.decode(o["segmentation"]), ref)
                assert o["bbox"] == a["bboxes"][t] and o["iscrowd"] == 0


def test_every_encoding_and_null_frames_are_accepted(tmp_path):
    h, w = 10, 12
    m = np.zeros((h, w), dtype=bool)
    m[2:6, 3:9] = True
    comp = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    comp = {"size": [h, w], "counts": comp["counts"].decode()}
    poly = [[3.0, 2.0, 9.0, 2.0, 9.0, 6.0, 3.0, 6.0]]
    data = {
        "videos": [{"id": 7, "height": h, "width": w, "length": 4, "file_names": [f"v/{i}.jpg" for i in range(4)]}],
        "categories": [{"id": 3, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": [{"id": 11, "video_id": 7, "category_id": 9, "iscrowd": 0,
                         "segmentations": [mask_to_uncompressed_rle(m), comp, None, poly]}],
    }
    jf = tmp_path / "x.json"
    jf.write_text(json.dumps(data))
    (d,) = load_ytvis_json(str(jf), str(tmp_path))
    assert [len(objs) for objs in d["annotations"]] == [1, 1, 0, 1]
    decoded = [mask_utils.decode(objs[0]["segmentation"]).astype(bool) for objs in d["annotations"] if objs]
    assert np.array_equal(decoded[0], m) and np.array_equal(decoded[1], m)
    assert decoded[2].sum() > 0 and (decoded[2] & m).sum() / (decoded[2] | m).sum() > 0.6
    assert d["annotations"][0][0]["category_id"] == 1  # id 9 -> contiguous 1
    assert d["annotations"][0][0]["bbox"] == [3.0, 2.0, 6.0, 4.0]  # computed from the mask when 'bboxes' is absent


def _bad(syn_root, tmp_path, edit):
    data = json.load(open(os.path.join(syn_root, "train.json")))
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return str(path)


def _first_ann(data):
    return data["annotations"][0]


@pytest.mark.parametrize("case,edit,pattern", [
    ("missing annotation key", lambda d: _first_ann(d).pop("segmentations"), r"missing key.*segmentations"),
    ("missing video key", lambda d: d["videos"][0].pop("height"), r"missing key.*height"),
    ("wrong segmentations length", lambda d: _first_ann(d)["segmentations"].pop(), r"'segmentations' has \d+ entries"),
    ("unknown category", lambda d: _first_ann(d).__setitem__("category_id", 77), r"unknown category_id 77"),
    ("mask size mismatch", lambda d: [s.__setitem__("size", [s["size"][0] + 1, s["size"][1]])
                                      for s in _first_ann(d)["segmentations"] if s], r"mask size .* differs"),
])
def test_bad_input_names_file_and_video(syn_root, tmp_path, case, edit, pattern):
    path = _bad(syn_root, tmp_path, edit)
    data = json.load(open(path))
    video_id = data["annotations"][0]["video_id"] if "missing video" not in case else data["videos"][0]["id"]
    with pytest.raises(YTVISFormatError, match=pattern) as e:
        load_ytvis_json(path, os.path.join(syn_root, "train", "JPEGImages"))
    assert path in str(e.value) and f"video_id {video_id}" in str(e.value), str(e.value)


def test_missing_top_level_key_and_missing_paths(syn_root, tmp_path):
    path = _bad(syn_root, tmp_path, lambda d: d.pop("categories"))
    with pytest.raises(YTVISFormatError, match="categories") as e:
        load_ytvis_json(path, syn_root)
    assert path in str(e.value)
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_ytvis_json(missing, syn_root, dataset_name=None)
    with pytest.raises(FileNotFoundError, match="no_images"):
        load_ytvis_json(os.path.join(syn_root, "train.json"), str(tmp_path / "no_images"))


def test_validation_json_without_annotations(syn_root, tmp_path):
    path = _bad(syn_root, tmp_path, lambda d: d.pop("annotations"))
    dicts = load_ytvis_json(path, os.path.join(syn_root, "train", "JPEGImages"))
    assert len(dicts) == SMALL["num_train"] and all(objs == [] for d in dicts for objs in d["annotations"])


# ----------------------------------------------------------------------------------------------- registration
def test_registered_builtin_datasets_load_from_standard_layout(syn_root, tmp_path, restore_registrations):
    root = tmp_path / "datasets"
    # YouTube-VIS 2019 layout: ytvis_2019/{train,valid}/JPEGImages + ytvis_2019/{train,valid}.json
    for split in ("train", "valid"):
        shutil.copytree(os.path.join(syn_root, split), root / "ytvis_2019" / split)
        shutil.copy(os.path.join(syn_root, f"{split}.json"), root / "ytvis_2019" / f"{split}.json")
    # OVIS layout: ovis/train + ovis/annotations/train.json
    shutil.copytree(os.path.join(syn_root, "train", "JPEGImages"), root / "ovis" / "train")
    (root / "ovis" / "annotations").mkdir(parents=True)
    shutil.copy(os.path.join(syn_root, "train.json"), root / "ovis" / "annotations" / "train.json")

    names = register_all_builtin(str(root), synthetic=syn_root)
    assert set(names) == {"ytvis_2019_train", "ytvis_2019_val", "ytvis_2021_train", "ytvis_2021_val",
                          "ytvis_2022_val", "ovis_train", "ovis_val", "synthetic_vis_train", "synthetic_vis_valid",
                          *(f"{p}_{h}_sub" for p in ("ytvis_2019", "ytvis_2021", "ovis") for h in ("train", "val"))}
    train = DatasetCatalog.get("ytvis_2019_train")
    val = DatasetCatalog.get("ytvis_2019_val")
    assert len(train) == SMALL["num_train"] and len(val) == SMALL["num_valid"]
    assert all(f.startswith(str(root / "ytvis_2019" / "train" / "JPEGImages")) and os.path.isfile(f)
               for d in train for f in d["file_names"])
    meta = MetadataCatalog.get("ytvis_2019_val")
    assert meta.evaluator_type == "ytvis" and meta.json_file == str(root / "ytvis_2019" / "valid.json")
    assert meta.image_root == str(root / "ytvis_2019" / "valid" / "JPEGImages") and len(meta.thing_classes) == 40
    # the 3 synthetic ids (1..3) go through the registered 2019 map -> contiguous 0..2
    assert {o["category_id"] for d in train for objs in d["annotations"] for o in objs} <= {0, 1, 2}
    assert len(DatasetCatalog.get("ovis_train")) == SMALL["num_train"]
    assert len(MetadataCatalog.get("ovis_train").thing_classes) == 25
    assert len(MetadataCatalog.get("ytvis_2022_val").thing_classes) == 40
    syn = DatasetCatalog.get("synthetic_vis_valid")
    assert len(syn) == SMALL["num_valid"] and MetadataCatalog.get("synthetic_vis_valid").json_file == os.path.join(
        syn_root, "valid.json")
    # registration is lazy: missing datasets only fail when loaded, naming the missing path
    with pytest.raises(FileNotFoundError, match=r"ytvis_2021.*train\.json"):
        DatasetCatalog.get("ytvis_2021_train")


def test_synthetic_registration_generates_when_missing(tmp_path, restore_registrations, monkeypatch):
    import local2global.data.synthetic as synthetic

    calls = []
    real = synthetic.make_synthetic_vis

    def small(root, **kwargs):  # keep the auto-generated default tiny for the test
        calls.append(root)
        return real(root, **dict(SMALL, **kwargs))

    monkeypatch.setattr(synthetic, "make_synthetic_vis", small)
    monkeypatch.setenv("L2G_SYNTHETIC_ROOT", str(tmp_path / "auto"))
    register_all_builtin(str(tmp_path / "unused"))
    assert len(DatasetCatalog.get("synthetic_vis_train")) == SMALL["num_train"]
    assert len(DatasetCatalog.get("synthetic_vis_valid")) == SMALL["num_valid"]
    assert calls == [str(tmp_path / "auto")]  # generated once, then reused


def test_register_custom_dataset(syn_root, restore_registrations):
    name = "l2g_test_custom_vis"
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_ytvis_instances(name, {}, "/does/not/exist.json", "/does/not/exist")  # lazy: no error yet
    with pytest.raises(FileNotFoundError, match="/does/not/exist.json"):
        DatasetCatalog.get(name)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    register_ytvis_instances(name, {}, os.path.join(syn_root, "valid.json"), os.path.join(syn_root, "valid", "JPEGImages"))
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert len(dicts) == SMALL["num_valid"] and meta.evaluator_type == "ytvis"
    # without metadata, the JSON's categories define the classes
    assert meta.thing_classes == ["striped_disk", "checkered_square", "dotted_triangle"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)

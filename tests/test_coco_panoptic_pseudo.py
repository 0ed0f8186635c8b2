"""COCO-panoptic pseudo-videos for VPS phase 1: ``CocoPanopticPseudoVideoMapper`` on a dataset written here in the
official COCO-panoptic layout (``train2017/*.jpg``, ``panoptic_train2017/*.png`` RGB ids,
``annotations/panoptic_train2017.json``), read by detectron2's own loader, and the phase-1 config's loader on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json, register_coco_panoptic
from PIL import Image

from local2global.data.coco_panoptic_pseudo_video import CocoPanopticPseudoVideoMapper
from local2global.data.vps_mapper import STUFF_TARGET_ID_OFFSET
from local2global.evaluation.vps.panoptic_io import id_to_rgb

REPO = Path(__file__).resolve().parents[1]
PHASE1 = "configs/local2global_r50_coco_panoptic_phase1.py"
H, W = 40, 60
# COCO dataset ids -> detectron2's contiguous ids (COCO_CATEGORIES order)
PERSON, CAR, SKY, GRASS = 1, 3, 187, 193
CONTIGUOUS = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}


def _image_segments(k: int):
    """Image ``k``'s id map and segments_info (COCO dataset ids): sky and grass (grass in two segments), two persons,
    a crowd of persons, a car, an unlabelled strip."""
    ids = np.zeros((H, W), np.int64)
    ids[: H // 2] = 1000  # sky
    ids[H // 2:, : W // 2] = 2000  # grass, left
    ids[H // 2:, W // 2:] = 2001  # grass, right (a second segment of the same stuff class)
    ids[4:14, 4 + k:16 + k] = 11  # person
    ids[22:34, 24:32] = 12  # person
    ids[24:30, 40:50] = 13  # person crowd
    ids[5:12, 40:56] = 21  # car
    ids[:, 58:] = 0  # unlabelled
    segs = [(1000, SKY, 0), (2000, GRASS, 0), (2001, GRASS, 0), (11, PERSON, 0), (12, PERSON, 0), (13, PERSON, 1),
            (21, CAR, 0)]
    info = []
    for sid, cat, crowd in segs:
        m = ids == sid
        ys, xs = np.nonzero(m)
        info.append({"id": sid, "category_id": cat, "iscrowd": crowd, "area": int(m.sum()),
                     "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]})
    return ids, info


def write_coco_panoptic(root: Path, num_images: int = 2) -> Path:
    """``<root>/coco`` in the official panoptic layout (file names as COCO's: 12-digit image ids)."""
    coco = root / "coco"
    for d in ("train2017", "panoptic_train2017", "annotations"):
        (coco / d).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k in range(num_images):
        image_id = 139 + k
        stem = f"{image_id:012d}"
        ids, info = _image_segments(k)
        Image.fromarray(id_to_rgb(ids)).save(coco / "panoptic_train2017" / f"{stem}.png")
        rgb = (np.random.default_rng(k).random((H, W, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(coco / "train2017" / f"{stem}.jpg", quality=95)
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": H, "width": W})
        annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": info})
    cats = [{"id": c["id"], "name": c["name"], "isthing": c["isthing"], "color": c["color"],
             "supercategory": "x"} for c in COCO_CATEGORIES]
    (coco / "annotations" / "panoptic_train2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return coco


def _dicts(coco: Path):
    return load_coco_panoptic_json(str(coco / "annotations" / "panoptic_train2017.json"), str(coco / "train2017"),
                                   str(coco / "panoptic_train2017"), _get_builtin_metadata("coco_panoptic_standard"))


def test_identity_motion_gives_the_segments_exactly(tmp_path):
    coco = write_coco_panoptic(tmp_path)
    d = _dicts(coco)[0]
    assert "height" not in d  # detectron2's panoptic dicts carry no size: the mapper reads it from the image
    mapper = CocoPanopticPseudoVideoMapper(num_frames=2, scale_range=(1.0, 1.0), max_rotation=0.0,
                                           max_translation=0.0, seed=0)
    clip = mapper(d)
    assert clip["video_id"] == 139 and (clip["height"], clip["width"]) == (H, W) and clip["frame_indices"] == [0, 1]
    src = np.asarray(Image.open(d["file_name"]).convert("RGB"))
    assert torch.equal(clip["images"][0], torch.from_numpy(src.transpose(2, 0, 1).copy()))
    ids, _ = _image_segments(0)
    expected = {  # target id -> (contiguous class, thing, mask); the crowd (13) and unlabelled pixels: no target
        11: (CONTIGUOUS[PERSON], True, ids == 11), 12: (CONTIGUOUS[PERSON], True, ids == 12),
        21: (CONTIGUOUS[CAR], True, ids == 21),
        STUFF_TARGET_ID_OFFSET + CONTIGUOUS[SKY]: (CONTIGUOUS[SKY], False, ids == 1000),
        STUFF_TARGET_ID_OFFSET + CONTIGUOUS[GRASS]: (CONTIGUOUS[GRASS], False, (ids == 2000) | (ids == 2001)),
    }
    for inst in clip["instances"]:
        assert inst.gt_ids.tolist() == sorted(expected)
        assert inst.gt_classes.tolist() == [expected[t][0] for t in sorted(expected)]
        assert inst.gt_is_thing.dtype == torch.bool
        assert inst.gt_is_thing.tolist() == [expected[t][1] for t in sorted(expected)]
        for tid, mask in zip(inst.gt_ids.tolist(), inst.gt_masks.tensor.numpy()):
            np.testing.assert_array_equal(mask, expected[tid][2])
        assert inst.gt_valid.all()
        np.testing.assert_array_equal(inst.gt_boxes.tensor[0].numpy(), [4, 4, 16, 14])  # person 11, xyxy


def test_random_motion_pseudo_video(tmp_path):
    coco = write_coco_panoptic(tmp_path)
    d = _dicts(coco)[1]
    mapper = CocoPanopticPseudoVideoMapper(num_frames=4, image_size=(32, 48), max_rotation=10.0, seed=3)
    clip = mapper(d)
    assert len(clip["images"]) == 4 and clip["images"][0].shape == (3, 32, 48)
    assert not torch.equal(clip["images"][0], clip["images"][3])  # the camera moves
    masks = [inst.gt_masks.tensor for inst in clip["instances"]]
    assert all(m.sum(0).max() <= 1 for m in masks)  # segments stay disjoint
    assert any(not torch.equal(masks[0][i], masks[3][i]) for i in range(len(masks[0])))
    things = clip["instances"][0].gt_is_thing
    assert things.sum() >= 2 and (~things).sum() >= 1
    again = CocoPanopticPseudoVideoMapper(num_frames=4, image_size=(32, 48), max_rotation=10.0, seed=3)(d)
    assert all(torch.equal(a, b) for a, b in zip(clip["images"], again["images"]))  # reproducible by seed
    # a class map: only the persons (-> 0) and sky (-> 1) stay targets
    mapped = CocoPanopticPseudoVideoMapper(num_frames=1, category_map={CONTIGUOUS[PERSON]: 0, CONTIGUOUS[SKY]: 1},
                                           seed=0)(d)
    inst = mapped["instances"][0]
    assert inst.gt_classes.tolist() == [0, 0, 1] and inst.gt_is_thing.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="vocabulary name"):
        CocoPanopticPseudoVideoMapper(category_map="ytvis_2019")


def test_bad_panoptic_png(tmp_path):
    coco = write_coco_panoptic(tmp_path, num_images=1)
    d = _dicts(coco)[0]
    png = Path(d["pan_seg_file_name"])
    Image.fromarray(np.zeros((H, W + 2, 3), np.uint8)).save(png)
    with pytest.raises(ValueError, match=r"000000000139\.png.*is 40x62 but the image is 40x60"):
        CocoPanopticPseudoVideoMapper(num_frames=1, seed=0)(d)
    png.unlink()
    with pytest.raises(FileNotFoundError, match="image_id 139"):
        CocoPanopticPseudoVideoMapper(num_frames=1, seed=0)(d)


@pytest.fixture
def builtin_panoptic_at(tmp_path):
    """detectron2's builtin ``coco_2017_train_panoptic`` re-registered at a folder written here (restored after)."""
    name = "coco_2017_train_panoptic"
    old_loader, old_meta = DatasetCatalog[name], MetadataCatalog.get(name).as_dict()
    coco = write_coco_panoptic(tmp_path / "datasets")
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    register_coco_panoptic(name, _get_builtin_metadata("coco_panoptic_standard"), str(coco / "train2017"),
                           str(coco / "panoptic_train2017"), str(coco / "annotations" / "panoptic_train2017.json"))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    DatasetCatalog.register(name, old_loader)
    MetadataCatalog.get(name).set(**{k: v for k, v in old_meta.items() if k != "name"})


def test_phase1_config_loads_panoptic_pseudo_videos(builtin_panoptic_at):
    cfg = LazyConfig.load(str(REPO / PHASE1))
    assert cfg.dataloader.train.dataset.names == builtin_panoptic_at
    assert cfg.dataloader.train.mapper.num_frames == 1 and cfg.model.num_classes == 133
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.mapper.augmentations[0].short_edge_length = (32,)
    cfg.dataloader.train.mapper.augmentations[0].max_size = 64
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert len(batch) == 2
    for clip in batch:
        assert clip["video_id"] in (139, 140) and len(clip["images"]) == 1
        inst = clip["instances"][0]
        assert min(inst.image_size) == 32
        assert set(inst.gt_classes[inst.gt_is_thing].tolist()) <= {CONTIGUOUS[PERSON], CONTIGUOUS[CAR]}
        assert set(inst.gt_classes[~inst.gt_is_thing].tolist()) == {CONTIGUOUS[SKY], CONTIGUOUS[GRASS]}


def test_tiny_model_trains_on_a_panoptic_pseudo_clip(tmp_path):
    """The 133-class tiny model's loss on a 3-frame panoptic pseudo-video (stuff without box loss)."""
    from test_vps_model import COCO_PANOPTIC_CLASSES, _tiny_model

    coco = write_coco_panoptic(tmp_path)
    clip = CocoPanopticPseudoVideoMapper(num_frames=3, seed=0)(_dicts(coco)[0])
    torch.manual_seed(0)
    model = _tiny_model(COCO_PANOPTIC_CLASSES).train()
    losses = model([clip])
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() > 0
    total.backward()

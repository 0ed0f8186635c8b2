"""Datasets with awkward annotations (issue 6) load, map and train without crashing, with the documented meaning:

* a video without annotations gives clips with no instances (trained as all-background);
* an instance present in a single frame is a track of every clip that samples that frame, valid on that frame only;
* an all-null track (``segmentations`` all ``null``) has no objects and never becomes a target; an empty RLE mask
  (zero pixels) is kept by the loader but dropped from a clip when empty in all of its sampled frames;
* crowd annotations (``iscrowd=1``) are loaded but never become targets.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
H, W, L = 32, 48, 4


def _rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}


def _box_mask(y0, y1, x0, x1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("odd")
    videos = []
    for vid in (1, 2, 3):
        names = []
        for t in range(L):
            rel = f"v{vid}/{t:05d}.jpg"
            (root / f"v{vid}").mkdir(exist_ok=True)
            img = np.full((H, W, 3), 30 * vid, np.uint8)
            img[4:20, 4 + 4 * t:20 + 4 * t] = 220
            cv2.imwrite(str(root / rel), img)
            names.append(rel)
        videos.append({"id": vid, "height": H, "width": W, "length": L, "file_names": names})
    empty = _rle(np.zeros((H, W), np.uint8))
    anns = [
        # video 1: nothing
        # video 2: a one-frame instance, an all-null track, an empty-mask track, a crowd region
        {"id": 21, "video_id": 2, "category_id": 1, "iscrowd": 0,
         "segmentations": [None, None, _rle(_box_mask(4, 20, 12, 28)), None]},
        {"id": 22, "video_id": 2, "category_id": 2, "iscrowd": 0, "segmentations": [None] * L},
        {"id": 23, "video_id": 2, "category_id": 2, "iscrowd": 0, "segmentations": [empty] * L},
        {"id": 24, "video_id": 2, "category_id": 3, "iscrowd": 1,
         "segmentations": [_rle(_box_mask(22, 30, 0, 48))] * L},
        # video 3: a normal track and a crowd region
        {"id": 31, "video_id": 3, "category_id": 3, "iscrowd": 0,
         "segmentations": [_rle(_box_mask(4, 20, 4 + 4 * t, 20 + 4 * t)) for t in range(L)]},
        {"id": 32, "video_id": 3, "category_id": 1, "iscrowd": 1,
         "segmentations": [_rle(_box_mask(24, 30, 0, 20))] * L},
    ]
    cats = [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)]
    path = root / "ann.json"
    path.write_text(json.dumps({"videos": videos, "annotations": anns, "categories": cats}))
    from local2global.data.ytvis import load_ytvis_json

    return load_ytvis_json(str(path), str(root))


def _clips(dicts, vid, n=12, num_frames=2):
    from local2global.data.clip_mapper import VideoClipDatasetMapper

    mapper = VideoClipDatasetMapper([], num_frames=num_frames, sampling_frame_range=3)
    d = next(x for x in dicts if x["video_id"] == vid)
    return [mapper(d, rng=np.random.default_rng(i)) for i in range(n)]


def test_odd_annotations_load_and_map(odd_dataset):
    by_id = {d["video_id"]: d for d in odd_dataset}
    assert sorted(by_id) == [1, 2, 3]
    assert all(frame == [] for frame in by_id[1]["annotations"])
    per_frame_ids = [sorted(o["id"] for o in frame) for frame in by_id[2]["annotations"]]
    assert per_frame_ids == [[23, 24], [23, 24], [21, 23, 24], [23, 24]]  # 22 (all null) has no object
    assert {o["iscrowd"] for f in by_id[2]["annotations"] for o in f if o["id"] == 24} == {1}

    for clip in _clips(odd_dataset, 1):
        assert all(len(inst) == 0 for inst in clip["instances"])
        assert all(inst.gt_masks.tensor.shape == (0, H, W) for inst in clip["instances"])
    seen_single = 0
    for clip in _clips(odd_dataset, 2):
        ids = clip["instances"][0].gt_ids.tolist()
        assert 22 not in ids and 24 not in ids and 23 not in ids  # all-null, crowd, empty mask
        if 2 in clip["frame_indices"]:
            seen_single += 1
            assert ids == [21]
            valid = [bool(inst.gt_valid[0]) for inst in clip["instances"]]
            assert valid == [t == 2 for t in clip["frame_indices"]]
        else:
            assert ids == []
    assert seen_single > 0
    for clip in _clips(odd_dataset, 3):
        assert clip["instances"][0].gt_ids.tolist() == [31]  # the crowd region is not a target
        assert clip["instances"][0].gt_classes.tolist() == [2]


def test_odd_dataset_trains(odd_dataset):
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(REPO / "configs" / "local2global_tiny_synthetic.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    empty = _clips(odd_dataset, 1, n=2, num_frames=3)
    single = [c for c in _clips(odd_dataset, 2, n=12, num_frames=3) if len(c["instances"][0])][:1]
    normal = _clips(odd_dataset, 3, n=1, num_frames=3)
    assert single, "no clip sampled the one-frame instance"
    for batch in (empty, single + empty[:1], normal + single):  # all-empty batch first
        losses = model(batch)
        total = sum(losses.values())
        bad = [k for k, v in losses.items() if not torch.isfinite(v)]
        assert not bad, bad
        opt.zero_grad()
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()

"""Two iterations of the real phase-1 (COCO) and phase-2 (YouTube-VIS 2019 + COCO pseudo-videos) recipes through
``scripts/train_net.py`` at 128 px, on generated data laid out like ``datasets/coco/`` and ``datasets/ytvis_2019/``.
Phase 1 must change exactly its trainable parameters (aligner, global embedding, l_pos, ref_point_head).
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from script_runner import run_script

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[1]
SMALL_AUGS = [
    "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
    "dataloader.train.mapper.augmentations.0.max_size=160",
    "dataloader.train.total_batch_size=1",
    "dataloader.train.num_workers=0",
    "train.device=cpu",
    "train.max_iter=2",
    "train.log_period=1",
    "train.seed=0",
]
PHASE1_PREFIXES = ("tracker.aligner.", "tracker.global_query_embed.", "decoder.decoder.ref_point_head.")


def _need_model_and_data():
    pytest.importorskip("local2global.modeling.segmenter.decoder", reason="the model code is not importable yet")
    pytest.importorskip("local2global.data.build", reason="the data code is not importable yet")


def _write_coco(syn_root: Path, coco_root: Path) -> None:
    """COCO layout from the first frame of every synthetic training video; synthetic classes -> COCO ids."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
    from pycocotools import mask as mask_utils

    syn = json.load(open(syn_root / "train.json"))
    to_coco = {1: 1, 2: 3, 3: 18}  # person, car, dog: all three are YouTube-VIS 2019 classes too
    (coco_root / "annotations").mkdir(parents=True)
    (coco_root / "train2017").mkdir()
    images, anns = [], []
    for v in syn["videos"]:
        src = syn_root / "train" / "JPEGImages" / v["file_names"][0]
        name = f"{v['id']:06d}.jpg"
        shutil.copy(src, coco_root / "train2017" / name)
        images.append({"id": v["id"], "file_name": name, "height": v["height"], "width": v["width"]})
        for a in syn["annotations"]:
            seg = a["segmentations"][0] if a["video_id"] == v["id"] else None
            if seg is None:
                continue
            rle = mask_utils.frPyObjects(seg, v["height"], v["width"]) if isinstance(seg.get("counts"), list) else seg
            m = mask_utils.decode(rle)
            if m.sum() == 0:
                continue
            enc = mask_utils.encode(np.asfortranarray(m))
            enc["counts"] = enc["counts"].decode("ascii")
            x, y, w, h = mask_utils.toBbox(enc).tolist()
            anns.append({"id": len(anns) + 1, "image_id": v["id"], "category_id": to_coco[a["category_id"]],
                         "segmentation": enc, "area": float(m.sum()), "bbox": [x, y, w, h], "iscrowd": 0})
    cats = [{"id": c["id"], "name": c["name"], "supercategory": "thing"} for c in COCO_CATEGORIES if c["isthing"]]
    json.dump({"images": images, "annotations": anns, "categories": cats},
              open(coco_root / "annotations" / "instances_train2017.json", "w"))


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    _need_model_and_data()
    from local2global.data.synthetic import ensure_synthetic_vis

    base = tmp_path_factory.mktemp("datasets")
    syn = base / "_synthetic"
    ensure_synthetic_vis(str(syn), num_train=3, num_valid=1, min_length=4, max_length=5, num_long=0,
                         height=96, width=128)
    yt = base / "ytvis_2019"
    yt.mkdir()
    from local2global.data.categories import YTVIS_2019_CATEGORIES

    for split in ("train", "valid"):
        data = json.load(open(syn / f"{split}.json"))
        # the synthetic classes 1..3 become YTVIS-2019 ids 1..3; the file lists the 40 YTVIS-2019 categories
        data["categories"] = [{"id": c["id"], "name": c["name"]} for c in YTVIS_2019_CATEGORIES]
        json.dump(data, open(yt / f"{split}.json", "w"))
        shutil.copytree(syn / split, yt / split)
    _write_coco(syn, base / "coco")
    return base


def train_net(args, root: Path):
    proc = run_script("train_net.py", args, env_extra={"DETECTRON2_DATASETS": str(root)}, timeout=1400)
    if proc.returncode != 0:
        raise AssertionError(f"train_net.py exited {proc.returncode}:\n{proc.stdout[-8000:]}")
    return proc


def _iters(out: Path):
    rows = [json.loads(line) for line in open(out / "metrics.json") if line.strip()]
    return rows, [r["iteration"] for r in rows if "total_loss" in r]


def test_phase1_then_phase2(datasets_root, tmp_path):
    from detectron2.config import LazyConfig, instantiate

    # phase 1 from a known initialisation, so that the frozen part can be compared exactly
    cfg = LazyConfig.load(str(REPO / "configs/local2global_r50_coco_phase1.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"model": init}, tmp_path / "init.pth")
    expected = {n for n, _ in model.named_parameters() if n.startswith(PHASE1_PREFIXES)}
    n_expected = sum(p.numel() for n, p in model.named_parameters() if n in expected)
    del model

    out1 = tmp_path / "phase1"
    proc = train_net(["--config-file", "configs/local2global_r50_coco_phase1.py", *SMALL_AUGS,
                      f"train.init_checkpoint={tmp_path / 'init.pth'}", f"train.output_dir={out1}"], datasets_root)
    m = re.search(r"Trainable parameters: (\d+) of (\d+)", (out1 / "log.txt").read_text())
    assert m and int(m.group(1)) == n_expected, (m and m.group(0), n_expected)
    rows, iters = _iters(out1)
    assert iters == [0, 1]
    final = torch.load(out1 / "model_final.pth", weights_only=False)["model"]
    param_names = {n for n in init if not n.endswith(("pixel_mean", "pixel_std"))}
    changed = {n for n in param_names if n in final and not torch.equal(final[n], init[n])}
    assert changed, "phase 1 changed no parameter"
    # only trainable parameters move; buffers (frozen BN statistics) and every other parameter stay bit-identical
    assert changed <= expected, sorted(changed - expected)[:10]
    assert "tracker.global_query_embed.weight" in changed and any(n.startswith("tracker.aligner.") for n in changed)
    assert "Traceback" not in proc.stdout

    # phase 2 from the phase-1 output (80 -> 40 classes: the class head is re-initialised, with a warning)
    out2 = tmp_path / "phase2"
    train_net(["--config-file", "configs/local2global_r50_ytvis19.py", *SMALL_AUGS,
               "dataloader.test.mapper.augmentations.0.short_edge_length=128",
               "dataloader.test.mapper.augmentations.0.max_size=160", "dataloader.test.num_workers=0",
               "dataloader.train.pseudo_ratio=0.5",
               f"train.init_checkpoint={out1 / 'model_final.pth'}", f"train.output_dir={out2}"], datasets_root)
    rows, iters = _iters(out2)
    assert iters == [0, 1]
    assert "segm/AP" in rows[-1]  # the generated validation split has annotations: it is scored
    log = (out2 / "log.txt").read_text()
    assert re.search(r"Trainable parameters: (\d+) of (\d+)", log)
    assert "Loading from" in log and "model_final.pth" in log


def test_tracker_recipes_on_ytvis_2019_layout(datasets_root, tmp_path):
    """The trackers' R-50 YouTube-VIS 2019 recipes train through train_net on data in the official layout: the
    image-mode segmenter stage (MinVIS's tracker, then evaluated as MinVIS), DVIS's tracker stage on that frozen
    segmenter, and InsPro-style propagation."""
    small_test = ["dataloader.test.mapper.augmentations.0.short_edge_length=128",
                  "dataloader.test.mapper.augmentations.0.max_size=160", "dataloader.test.num_workers=0",
                  "train.eval_period=-1"]
    stage1 = tmp_path / "segmenter_image"
    train_net(["--config-file", "configs/trackers/segmenter_r50_ytvis19_image.py", *SMALL_AUGS, *small_test,
               "train.init_checkpoint=", f"train.output_dir={stage1}"], datasets_root)
    assert _iters(stage1)[1] == [0, 1]
    minvis = tmp_path / "minvis_eval"
    train_net(["--config-file", "configs/trackers/segmenter_r50_ytvis19_image.py", "--eval-only", *SMALL_AUGS,
               *small_test, f"train.init_checkpoint={stage1 / 'model_final.pth'}", f"train.output_dir={minvis}"],
              datasets_root)
    assert "segm" in json.load(open(minvis / "eval_results.json"))
    dvis = tmp_path / "dvis"
    train_net(["--config-file", "configs/trackers/dvis_r50_ytvis19.py", *SMALL_AUGS, *small_test,
               f"train.init_checkpoint={stage1 / 'model_final.pth'}", f"train.output_dir={dvis}"], datasets_root)
    assert _iters(dvis)[1] == [0, 1]
    first = torch.load(stage1 / "model_final.pth", weights_only=False)["model"]
    after = torch.load(dvis / "model_final.pth", weights_only=False)["model"]
    # DVIS's stage 2: the segmenter stays as stage 1 left it, the tracker moved
    seg_keys = [k for k in first if k.startswith(("backbone.", "pixel_decoder.", "decoder."))]
    assert seg_keys and all(torch.equal(first[k], after[k]) for k in seg_keys)
    assert any(k.startswith("tracker.") for k in after) and not any(k.startswith("tracker.") for k in first)
    inspro = tmp_path / "inspro"
    train_net(["--config-file", "configs/trackers/inspro_r50_ytvis19.py", *SMALL_AUGS, *small_test,
               "dataloader.train.pseudo_ratio=0.5", "train.init_checkpoint=", f"train.output_dir={inspro}"],
              datasets_root)
    rows, iters = _iters(inspro)
    assert iters == [0, 1] and any("loss_dedup" in r for r in rows)

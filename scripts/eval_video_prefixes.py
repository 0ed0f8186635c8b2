#!/usr/bin/env python
"""Where along the videos is the AP lost? Score a model on the first K frames of every held-out video.

    python scripts/eval_video_prefixes.py --config-file configs/local2global_tiny_demo.py \
        --checkpoint output/demo/train/model_final.pth --prefixes 1,3,8,16,0

For each K (0 = whole videos) the test videos of the config's test dataset are cut to their first K frames, the
model runs online on the cut videos, the ground truth is cut alike (tracks without a mask in the first K frames are
dropped) and both are scored with the YouTube-VIS metric, per class and class-agnostic (every category merged into
one). An online model's outputs on frame t do not depend on later frames, so the cut videos isolate what happens
as the videos go on: drift of the propagated queries, entries, exits and occlusions.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
from typing import Dict, List

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog

from local2global.engine.overrides import apply_overrides_strict
from local2global.evaluation.ytvis import evaluate_ytvis

logger = logging.getLogger("local2global.eval_video_prefixes")


def cut_ground_truth(gt: dict, k: int) -> dict:
    """A copy of a YouTube-VIS ground truth with every video cut to its first ``k`` frames (``k <= 0``: unchanged)."""
    gt = copy.deepcopy(gt)
    if k <= 0:
        return gt
    for video in gt["videos"]:
        video["length"] = min(k, video["length"])
        video["file_names"] = video["file_names"][:k]
    kept = []
    for ann in gt["annotations"]:
        for key in ("segmentations", "areas", "bboxes"):
            if key in ann and ann[key] is not None:
                ann[key] = ann[key][:k]
        if any(ann["segmentations"]):
            kept.append(ann)
    gt["annotations"] = kept
    return gt


def cut_video_dict(video: dict, k: int) -> dict:
    """A dataset dict (SPEC §5 video record) cut to its first ``k`` frames (``k <= 0``: unchanged)."""
    n = len(video["file_names"])
    if k <= 0 or k >= n:
        return video
    out = dict(video)
    for key, value in video.items():
        if isinstance(value, list) and len(value) == n:
            out[key] = value[:k]
    out["length"] = k
    return out


def class_agnostic(gt: dict, results: List[dict]):
    """Ground truth and results with every category id replaced by the first category's."""
    gt = copy.deepcopy(gt)
    cat = gt["categories"][0]["id"]
    gt["categories"] = gt["categories"][:1]
    for ann in gt["annotations"]:
        ann["category_id"] = cat
    return gt, [dict(r, category_id=cat) for r in results]


def main(argv=None) -> Dict[int, Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--checkpoint", required=True, help="model weights (train.init_checkpoint)")
    parser.add_argument("--prefixes", default="1,3,8,16,0", help="comma-separated K values; 0 = whole videos")
    parser.add_argument("--json", default=None, help="also write {K: {metric: percent}} to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    prefixes = [int(k) for k in args.prefixes.split(",")]

    cfg = apply_overrides_strict(LazyConfig.load(args.config_file), args.opts)
    model = instantiate(cfg.model).to(cfg.train.device)
    DetectionCheckpointer(model).load(args.checkpoint)
    model.eval()
    mapper = instantiate(cfg.dataloader.test.mapper)
    videos = instantiate(cfg.dataloader.test.dataset)
    meta = MetadataCatalog.get(cfg.dataloader.evaluator.dataset_name)
    to_dataset_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    with open(meta.json_file) as f:
        gt = json.load(f)

    table: Dict[int, Dict[str, float]] = {}
    for k in prefixes:
        results = []
        with torch.no_grad():
            for video in videos:
                out = model([mapper(cut_video_dict(video, k))])[0]
                for score, label, segs in zip(out["scores"], out["labels"], out["segmentations"]):
                    results.append({"video_id": int(video["video_id"]), "category_id": to_dataset_id[int(label)],
                                    "score": float(score), "segmentations": segs})
        cut = cut_ground_truth(gt, k)
        per_class = evaluate_ytvis(cut, results)
        agnostic = evaluate_ytvis(*class_agnostic(cut, results))
        table[k] = {"AP": per_class["AP"], "AP50": per_class["AP50"], "AP75": per_class["AP75"],
                    "AP agnostic": agnostic["AP"], "AP50 agnostic": agnostic["AP50"]}
        logger.info("K=%s done", k or "all")

    keys = ["AP", "AP50", "AP75", "AP agnostic", "AP50 agnostic"]
    print("| first K frames | " + " | ".join(keys) + " |")
    print("|---:|" + "---:|" * len(keys))
    for k, row in table.items():
        print(f"| {k or 'all'} | " + " | ".join(f"{100 * row[c]:.1f}" if row[c] >= 0 else "nan" for c in keys) + " |")
    if args.json:
        with open(args.json + ".partial", "w") as f:
            json.dump({str(k): {c: (100 * v if v >= 0 else None) for c, v in row.items()} for k, row in table.items()},
                      f, indent=1)
        os.replace(args.json + ".partial", args.json)
    return table


if __name__ == "__main__":
    main()
    sys.exit(0)

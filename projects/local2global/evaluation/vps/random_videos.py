"""Random panoptic videos in the VIPSeg 720p layout (ground truth + a perturbed prediction), for tests and the
comparison with the official scripts.

The ground truth of a video is a set of rectangles (stuff and thing tubes) that move and appear / disappear
over the frames, painted in order over a void background; the prediction starts from the ground truth and is
perturbed: shifted rectangles, ids swapped between frames, wrong categories, extra false-positive segments,
pixels set to void, segments merged. Optional corner cases (``corner_cases=True``): crowd segments, JSON areas
that differ from the PNG, ground-truth ids listed in only some frames, gt pixel ids listed in no frame,
duplicate JSON entries, id 0 listed as a segment, predicted ids whose category changes over the video, gt
categories not in the category list. Everything is a function of the seed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from PIL import Image

from .panoptic_io import id_to_rgb

__all__ = ["RandomVPSConfig", "write_random_vps", "random_categories"]


@dataclass
class RandomVPSConfig:
    """Sizes of the random data set."""

    num_videos: int = 3
    min_frames: int = 1
    max_frames: int = 10
    height: int = 24
    width: int = 32
    num_categories: int = 8
    max_segments: int = 7
    corner_cases: bool = False
    crowd: bool = False


def random_categories(rng: np.random.Generator, n: int) -> List[dict]:
    """``n`` categories with ids 0..n-1, at least one thing and one stuff when ``n >= 2``."""
    isthing = rng.integers(0, 2, n)
    if n >= 2:
        isthing[0], isthing[1] = 0, 1
    return [{"id": i, "name": f"c{i}", "isthing": int(isthing[i]), "color": [0, 0, 0]} for i in range(n)]


def _rect(rng, h, w):
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    return [y0, x0, y0 + rng.integers(2, max(3, h // 2)), x0 + rng.integers(2, max(3, w // 2))]


def _paint(shape, rects):
    out = np.zeros(shape, np.int64)
    for sid, (y0, x0, y1, x1) in rects:
        out[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = sid
    return out


def _segments(ids_map, cat_of, rng, cfg, gt: bool, crowd_ids=()):
    ids, counts = np.unique(ids_map, return_counts=True)
    segs = []
    for i, a in zip(ids.tolist(), counts.tolist()):
        if i == 0:
            continue
        s = {"id": int(i), "category_id": int(cat_of[i])}
        if gt:
            s["iscrowd"] = int(i in crowd_ids)
            s["area"] = int(a)
        segs.append(s)
    rng.shuffle(segs)
    return segs


def write_random_vps(root: str, seed: int, cfg: Optional[RandomVPSConfig] = None) -> dict:
    """Write ``root/{gt.json, gt/, pred.json, pred/}``; return the paths (keys ``gt_json gt_dir pred_json pred_dir``).

    The prediction JSON and PNG folder follow the official layout (``pred.json`` + ``pan_pred``-style folders
    ``pred/<video>/<frame>.png``).
    """
    cfg = cfg or RandomVPSConfig()
    rng = np.random.default_rng(seed)
    cats = random_categories(rng, cfg.num_categories)
    h, w = cfg.height, cfg.width
    gt_dir, pred_dir = os.path.join(root, "gt"), os.path.join(root, "pred")
    videos, gt_anns, pred_anns = [], [], []
    for v in range(cfg.num_videos):
        vid = f"{v}_vid{seed}"
        T = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        n_seg = int(rng.integers(1, cfg.max_segments + 1))
        seg_ids = rng.choice(np.arange(1, 2**24), n_seg, replace=False)
        if cfg.corner_cases and rng.random() < 0.2:
            seg_ids[0] = int(rng.integers(1, 5))  # small ids
        seg_cat = {int(s): int(rng.integers(0, cfg.num_categories)) for s in seg_ids}
        crowd_ids = {int(s) for s in seg_ids if cfg.crowd and cats[seg_cat[int(s)]]["isthing"] and rng.random() < 0.3}
        rects = {int(s): _rect(rng, h, w) for s in seg_ids}
        vel = {int(s): rng.integers(-2, 3, 2) for s in seg_ids}
        alive = {int(s): (int(rng.integers(0, T)), int(rng.integers(0, T))) for s in seg_ids}
        pred_map_ids = {int(s): int(rng.integers(1, 2**24)) for s in seg_ids}
        pred_cat = {p: seg_cat[s] if rng.random() < 0.8 else int(rng.integers(0, cfg.num_categories))
                    for s, p in pred_map_ids.items()}
        extra_pred = int(rng.integers(1, 2**24))
        pred_cat[extra_pred] = int(rng.integers(0, cfg.num_categories))
        images, g_frames, p_frames = [], [], []
        os.makedirs(os.path.join(gt_dir, vid), exist_ok=True)
        os.makedirs(os.path.join(pred_dir, vid), exist_ok=True)
        for t in range(T):
            live = [(s, r) for s, r in rects.items() if min(alive[s]) <= t <= max(alive[s]) or rng.random() < 0.3]
            moved = [(s, [r[0] + vel[s][0] * t, r[1] + vel[s][1] * t, r[2] + vel[s][0] * t, r[3] + vel[s][1] * t])
                     for s, r in live]
            gt_map = _paint((h, w), moved)
            # prediction: perturbed rectangles, mapped ids
            p_rects = []
            for s, r in moved:
                if rng.random() < 0.1:
                    continue
                jit = rng.integers(-1, 2, 4) * (rng.random() < 0.3)
                pid = pred_map_ids[s]
                if rng.random() < 0.1:  # identity switch in this frame
                    pid = pred_map_ids[int(rng.choice(list(pred_map_ids)))]
                p_rects.append((pid, [a + b for a, b in zip(r, jit)]))
            if rng.random() < 0.5:
                p_rects.append((extra_pred, _rect(rng, h, w)))
            if rng.random() < 0.3:
                p_rects.append((0, _rect(rng, h, w)))  # predicted void
            pred_map = _paint((h, w), p_rects)
            g_cat = dict(seg_cat)
            p_cat = dict(pred_cat)
            if cfg.corner_cases and rng.random() < 0.3:  # a predicted id changes category in this frame
                k = int(rng.choice(list(p_cat)))
                p_cat[k] = int(rng.integers(0, cfg.num_categories))
            g_segs = _segments(gt_map, g_cat, rng, cfg, True, crowd_ids)
            p_segs = _segments(pred_map, p_cat, rng, cfg, False)
            if cfg.corner_cases:
                _corner_cases(rng, g_segs, p_segs, gt_map, cfg)
                if rng.random() < 0.1 and (pred_map == 0).any():  # the predicted void id listed as a segment
                    p_segs.append({"id": 0, "category_id": int(rng.integers(0, cfg.num_categories))})
            name = f"{t:08d}.png"
            Image.fromarray(id_to_rgb(gt_map)).save(os.path.join(gt_dir, vid, name))
            Image.fromarray(id_to_rgb(pred_map)).save(os.path.join(pred_dir, vid, name))
            images.append({"id": f"{t:08d}", "width": w, "height": h, "file_name": name})
            g_frames.append({"image_id": f"{t:08d}", "file_name": name, "segments_info": g_segs})
            p_frames.append({"image_id": f"{t:08d}", "file_name": name, "segments_info": p_segs})
        videos.append({"video_id": vid, "images": images})
        gt_anns.append({"video_id": vid, "annotations": g_frames})
        pred_anns.append({"video_id": vid, "annotations": p_frames})
    paths = {"gt_json": os.path.join(root, "gt.json"), "gt_dir": gt_dir,
             "pred_json": os.path.join(root, "pred.json"), "pred_dir": pred_dir}
    with open(paths["gt_json"], "w") as f:
        json.dump({"videos": videos, "annotations": gt_anns, "categories": cats}, f)
    with open(paths["pred_json"], "w") as f:
        json.dump({"annotations": pred_anns}, f)
    return paths


def _corner_cases(rng, g_segs, p_segs, gt_map, cfg) -> None:
    """Perturb one frame's ground-truth JSON in ways the official scripts accept."""
    r = rng.random()
    if g_segs and r < 0.15:  # JSON area larger than the PNG (smaller could make the official IoU assertion fail)
        g_segs[0]["area"] += int(rng.integers(1, 20))
    elif g_segs and r < 0.165:  # id in the PNG but dropped from this frame's JSON (IoU > 1 possible: rejected)
        g_segs.pop(int(rng.integers(0, len(g_segs))))
    elif g_segs and r < 0.265:  # a duplicate entry (its area adds up)
        d = dict(g_segs[0])
        d["area"] = int(rng.integers(1, 5))
        g_segs.append(d)
    elif r < 0.365:  # gt id listed without pixels in this frame
        g_segs.append({"id": int(rng.integers(1, 2**24)), "category_id": int(rng.integers(0, cfg.num_categories)),
                       "iscrowd": 0, "area": int(rng.integers(1, 30))})
    elif r < 0.415:  # a gt category outside the category list
        g_segs.append({"id": int(rng.integers(1, 2**24)), "category_id": cfg.num_categories + 3,
                       "iscrowd": 0, "area": 5})
    elif r < 0.43 and (gt_map == 0).any():  # the void id listed as a segment (IoU > 1 possible: rejected)
        g_segs.append({"id": 0, "category_id": int(rng.integers(0, cfg.num_categories)), "iscrowd": 0,
                       "area": int((gt_map == 0).sum())})

"""A straightforward re-statement of the official VPQ / STQ loops (test oracle of :mod:`.evaluate`).

Written for clarity, not speed, and sharing no code with the fast path: it reads the JSON and PNGs itself, walks
every window of every video with dictionaries (``eval_vpq_vspw.py``'s steps: per-frame segment dicts, tube
areas, the pair map of the stacked window, matching, false negatives, crowd, false positives), and for STQ
paints every frame's semantic / instance maps pixel by pixel and accumulates deeplab2's dictionaries. It expects
well-formed inputs (no validation) and returns, like :func:`.evaluate.evaluate_vps`, percent values plus the
per-window list; an undefined average is ``nan`` (where the official script raises ``ZeroDivisionError``).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from typing import Dict, List

import numpy as np
from PIL import Image

__all__ = ["evaluate_vps_reference"]

_WINDOWS = (1, 2, 4, 6, 8)


def _ids(path: str) -> np.ndarray:
    rgb = np.array(Image.open(path)).astype(np.int64)
    return rgb[:, :, 0] + 256 * rgb[:, :, 1] + 65536 * rgb[:, :, 2]


def _frame_segments(segments_info: List[dict], with_area: bool) -> Dict[int, dict]:
    out: Dict[int, dict] = {}
    for s in segments_info:
        if s["id"] in out:
            if with_area:
                out[s["id"]]["area"] += s["area"]
        else:
            out[s["id"]] = dict(s)
    return out


def _vpq_video(frames, categories, n, stats) -> None:
    for start in range(0, len(frames) - n + 1):
        window = frames[start:start + n]
        gt_tubes: Dict[int, dict] = {}
        pred_tubes: Dict[int, dict] = {}
        pair: Dict[tuple, int] = defaultdict(int)
        for gt_ids, pred_ids, gt_segs, pred_segs in window:
            gseg = _frame_segments(gt_segs, True)
            pseg = _frame_segments(pred_segs, False)
            for pid in pseg:
                pseg[pid]["area"] = int((pred_ids == pid).sum())
            for k, v in gseg.items():
                if k in gt_tubes:
                    gt_tubes[k]["area"] += v["area"]
                else:
                    gt_tubes[k] = v
            for k, v in pseg.items():
                if k in pred_tubes:
                    pred_tubes[k]["area"] += v["area"]
                else:
                    pred_tubes[k] = v
            for g, p in zip(gt_ids.ravel().tolist(), pred_ids.ravel().tolist()):
                pair[(g, p)] += 1
        matched_gt, matched_pred = set(), set()
        for (g, p), inter in sorted(pair.items()):
            if g not in gt_tubes or p not in pred_tubes or gt_tubes[g].get("iscrowd", 0) == 1:
                continue
            if gt_tubes[g]["category_id"] != pred_tubes[p]["category_id"]:
                continue
            union = pred_tubes[p]["area"] + gt_tubes[g]["area"] - inter - pair.get((0, p), 0)
            iou = inter / union
            assert iou <= 1.0, f"invalid IoU {iou}"
            if iou > 0.5:
                cat = gt_tubes[g]["category_id"]
                stats[cat]["tp"] += 1
                stats[cat]["iou"] += iou
                matched_gt.add(g)
                matched_pred.add(p)
        crowd_of_category: Dict[int, int] = {}
        for g, info in gt_tubes.items():
            if g in matched_gt:
                continue
            if info.get("iscrowd", 0) == 1:
                crowd_of_category[info["category_id"]] = g
                continue
            stats[info["category_id"]]["fn"] += 1
        for p, info in pred_tubes.items():
            if p in matched_pred:
                continue
            ignored = pair.get((0, p), 0)
            if info["category_id"] in crowd_of_category:
                ignored += pair.get((crowd_of_category[info["category_id"]], p), 0)
            if ignored / info["area"] > 0.5:
                continue
            stats[info["category_id"]]["fp"] += 1


def _pq_average(stats, categories, isthing) -> dict:
    pq = sq = rq = 0.0
    n = 0
    for cid, info in categories.items():
        if isthing is not None and (info["isthing"] == 1) != isthing:
            continue
        s = stats[cid]
        if s["tp"] + s["fp"] + s["fn"] == 0:
            continue
        n += 1
        d = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
        pq += s["iou"] / d
        sq += s["iou"] / s["tp"] if s["tp"] else 0.0
        rq += s["tp"] / d
    if n == 0:
        return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}
    return {"pq": 100 * pq / n, "sq": 100 * sq / n, "rq": 100 * rq / n, "n": n}


def _stq(videos_frames, categories) -> dict:
    num_classes, void, shift = 124, 255, 16
    things = [c for c, info in categories.items() if info["isthing"]]
    total_conf = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    aq_total, tubes_total = 0.0, 0
    for frames in videos_frames:
        gt_rank: Dict[int, int] = {}
        pred_rank: Dict[int, int] = {}
        for _, _, gsegs, psegs in frames:
            for s in gsegs:
                gt_rank.setdefault(s["id"], len(gt_rank))
            for s in psegs:
                pred_rank.setdefault(s["id"], len(pred_rank))
        gts: Dict[int, int] = defaultdict(int)
        preds: Dict[int, int] = defaultdict(int)
        inters: Dict[tuple, int] = defaultdict(int)
        for gt_ids, pred_ids, gsegs, psegs in frames:
            gsem = np.full(gt_ids.shape, void, np.int64)
            gins = np.full(gt_ids.shape, void, np.int64)
            for s in gsegs:
                gsem[gt_ids == s["id"]] = s["category_id"]
                gins[gt_ids == s["id"]] = gt_rank[s["id"]]
            psem = np.full(pred_ids.shape, void, np.int64)
            pins = np.full(pred_ids.shape, void, np.int64)
            for s in psegs:
                psem[pred_ids == s["id"]] = s["category_id"]
                pins[pred_ids == s["id"]] = pred_rank[s["id"]]
            y_true = (gsem << shift) + gins
            y_pred = (psem << shift) + pins
            for a, b in zip(np.where(gsem == void, num_classes, gsem).ravel(),
                            np.where(psem == void, num_classes, psem).ravel()):
                total_conf[a, b] += 1 if a != num_classes else 0
            g_thing = np.isin(gsem, things)
            p_thing = np.isin(psem, things)
            crowd = g_thing & (gins == 0)
            for yt, yp, gt_on, pr_on in zip(y_true.ravel(), y_pred.ravel(), (g_thing & ~crowd).ravel(),
                                            (p_thing & ~crowd).ravel()):
                if gt_on:
                    gts[int(yt)] += 1
                if pr_on:
                    preds[int(yp)] += 1
                if gt_on and pr_on:
                    inters[(int(yt), int(yp))] += 1
        for g, gsize in gts.items():
            inner = 0.0
            for p, psize in preds.items():
                tpa = inters.get((g, p), 0)
                if tpa:
                    inner += tpa * tpa / (psize + gsize - tpa)
            aq_total += inner / gsize
        tubes_total += len(gts)
    aq = aq_total / max(tubes_total, 1e-15)
    inter = np.diagonal(total_conf).astype(float)
    union = total_conf.sum(0) + total_conf.sum(1) - np.diagonal(total_conf)
    n = np.count_nonzero(union)
    iou = float(np.sum(inter / np.maximum(union, 1e-15)) / n) if n else math.nan
    return {"STQ": math.sqrt(aq * iou) if not math.isnan(iou) else math.nan, "AQ": aq, "IoU": iou}


def evaluate_vps_reference(gt_json: str, gt_dir: str, pred_json: str, pred_dir: str) -> dict:
    """Official VPQ and STQ by the obvious loops; ``{"VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "SQ", "per_window"}``."""
    with open(gt_json) as f:
        gt = json.load(f)
    with open(pred_json) as f:
        pred = json.load(f)
    categories = {c["id"]: c for c in gt["categories"]}
    gt_ann = {a["video_id"]: a["annotations"] for a in gt["annotations"]}
    pred_ann = {a["video_id"]: a["annotations"] for a in pred["annotations"]}
    videos_frames = []
    for v in gt["videos"]:
        vid = v["video_id"]
        frames = []
        for im, gframe, pframe in zip(v["images"], gt_ann[vid], pred_ann[vid]):
            frames.append((_ids(os.path.join(gt_dir, vid, im["file_name"])),
                           _ids(os.path.join(pred_dir, vid, im["file_name"])),
                           gframe["segments_info"], pframe["segments_info"]))
        videos_frames.append(frames)
    per_window = []
    for n in _WINDOWS:
        stats = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
        for frames in videos_frames:
            _vpq_video(frames, categories, n, stats)
        per_window.append({"k": (n - 1) * 5, "nframes": n,
                           **{name: _pq_average(stats, categories, th)
                              for name, th in (("All", None), ("Things", True), ("Stuff", False))}})
    out = {}
    for key, name in (("VPQ", "All"), ("VPQ_th", "Things"), ("VPQ_st", "Stuff")):
        vals = [w[name]["pq"] for w in per_window if not math.isnan(w[name]["pq"])]
        out[key] = sum(vals) / len(vals) if vals else math.nan
    stq = _stq(videos_frames, categories)
    out.update(STQ=100 * stq["STQ"], AQ=100 * stq["AQ"], SQ=100 * stq["IoU"], per_window=per_window, stq=stq)
    return out

"""VPQ / STQ: hand-computed cases, the official quirks, agreement with the reference loops, bad inputs."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from local2global.evaluation.vps.evaluate import evaluate_vps
from local2global.evaluation.vps.panoptic_io import VPSFormatError, id_to_rgb
from local2global.evaluation.vps.random_videos import RandomVPSConfig, write_random_vps
from local2global.evaluation.vps.reference import evaluate_vps_reference

CATS = [{"id": 0, "name": "stuff", "isthing": 0}, {"id": 1, "name": "thing", "isthing": 1}]


def write_case(root, videos, categories=CATS):
    """``videos``: {name: [(gt_map, gt_segments, pred_map, pred_segments)] per frame}; areas filled from the maps."""
    gt = {"videos": [], "annotations": [], "categories": categories}
    pred = {"annotations": []}
    for name, frames in videos.items():
        for sub in ("gt", "pred"):
            os.makedirs(os.path.join(root, sub, name), exist_ok=True)
        images, ga, pa = [], [], []
        for t, (gmap, gsegs, pmap, psegs) in enumerate(frames):
            fn = f"{t:08d}.png"
            Image.fromarray(id_to_rgb(np.asarray(gmap))).save(os.path.join(root, "gt", name, fn))
            Image.fromarray(id_to_rgb(np.asarray(pmap))).save(os.path.join(root, "pred", name, fn))
            gsegs = [dict(s, area=s.get("area", int((np.asarray(gmap) == s["id"]).sum())), iscrowd=s.get("iscrowd", 0))
                     for s in gsegs]
            images.append({"id": f"{t:08d}", "file_name": fn, "height": len(gmap), "width": len(gmap[0])})
            ga.append({"image_id": f"{t:08d}", "file_name": fn, "segments_info": gsegs})
            pa.append({"image_id": f"{t:08d}", "file_name": fn, "segments_info": psegs})
        gt["videos"].append({"video_id": name, "images": images})
        gt["annotations"].append({"video_id": name, "annotations": ga})
        pred["annotations"].append({"video_id": name, "annotations": pa})
    paths = (os.path.join(root, "gt.json"), os.path.join(root, "gt"), os.path.join(root, "pred.json"),
             os.path.join(root, "pred"))
    with open(paths[0], "w") as f:
        json.dump(gt, f)
    with open(paths[2], "w") as f:
        json.dump(pred, f)
    return paths


def halves(left, right):
    m = np.zeros((4, 4), np.int64)
    m[:, :2], m[:, 2:] = left, right
    return m


def switch_video(thing_first=False):
    """8 frames: stuff (gt 10) left, thing (gt 20) right; the prediction's thing id switches 2 -> 3 at frame 4."""
    gsegs = [{"id": 10, "category_id": 0}, {"id": 20, "category_id": 1}]
    if thing_first:
        gsegs = gsegs[::-1]
    frames = []
    for t in range(8):
        pid = 2 if t < 4 else 3
        frames.append((halves(10, 20), gsegs, halves(1, pid),
                       [{"id": 1, "category_id": 0}, {"id": pid, "category_id": 1}]))
    return {"v": frames}


def test_vpq_stq_hand_computed(tmp_path):
    r = evaluate_vps(*write_case(str(tmp_path), switch_video()))
    # thing PQ per window (by hand, see docs/VPS.md): n=1: 1; n=2: 6/7.5; n=4: 3.5/6.5; n=6: (4/3)/4.5; n=8: 0
    th = [1.0, 6 / 7.5, 3.5 / 6.5, (4 / 3) / 4.5, 0.0]
    assert [w["k"] for w in r["per_window"]] == [0, 5, 15, 25, 35]
    for w, t in zip(r["per_window"], th):
        assert w["Things"]["pq"] == pytest.approx(100 * t, abs=1e-9)
        assert w["Stuff"]["pq"] == pytest.approx(100.0, abs=1e-9)
        assert w["All"]["pq"] == pytest.approx(50 * (1 + t), abs=1e-9)
    assert r["per_window"][2]["per_class"][1] == {"pq": pytest.approx(3.5 / 6.5), "sq": pytest.approx(3.5 / 4),
                                                  "rq": pytest.approx(4 / 6.5), "iou": pytest.approx(3.5),
                                                  "tp": 4, "fp": 4, "fn": 1}
    assert r["VPQ_th"] == pytest.approx(100 * sum(th) / 5, abs=1e-9)
    assert r["VPQ_st"] == pytest.approx(100.0) and r["VPQ"] == pytest.approx(50 + 50 * sum(th) / 5)
    # STQ: one gt thing tube (64 px), two predicted tubes of 32 px each: IoU 1/2 each -> AQ = 0.5; mIoU = 1
    assert r["AQ"] == pytest.approx(50.0) and r["SQ"] == pytest.approx(100.0)
    assert r["STQ"] == pytest.approx(100 * math.sqrt(0.5))


def test_stq_first_listed_thing_is_crowd(tmp_path):
    """eval_stq_vspw.py numbers instances from 0 and deeplab2 treats instance 0 of a thing class as crowd."""
    r = evaluate_vps(*write_case(str(tmp_path), switch_video(thing_first=True)))
    assert r["AQ"] == 0.0 and r["STQ"] == 0.0 and r["SQ"] == pytest.approx(100.0)
    assert r["VPQ_th"] == pytest.approx(100 * (1 + 6 / 7.5 + 3.5 / 6.5 + (4 / 3) / 4.5) / 5)  # VPQ is unaffected


def test_void_conventions(tmp_path):
    """VPQ removes void from the union and ignores predictions mostly on void / crowd; STQ counts a labelled
    pixel predicted void as a false negative and the void column as one more class of IoU 0."""
    g = np.zeros((4, 4), np.int64)
    g[:2] = 10  # stuff, 8 px; rows 2-3 void
    g[3, :2] = 30  # crowd thing (2 px)
    p = np.zeros((4, 4), np.int64)
    p[:3] = 1  # stuff prediction: 8 px on gt 10, 4 px on void
    p[3, :2] = 2  # thing prediction on the crowd region: ignored
    p[3, 3] = 4  # thing prediction on void: ignored
    gsegs = [{"id": 10, "category_id": 0}, {"id": 30, "category_id": 1, "iscrowd": 1}]
    psegs = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}, {"id": 4, "category_id": 1}]
    r = evaluate_vps(*write_case(str(tmp_path / "a"), {"v": [(g, gsegs, p, psegs)]}))
    w = r["per_window"][0]
    assert w["Stuff"] == {"pq": pytest.approx(100.0), "sq": pytest.approx(100.0), "rq": pytest.approx(100.0), "n": 1}
    assert w["per_class"][1]["fp"] == 0 and w["per_class"][1]["fn"] == 0 and math.isnan(w["Things"]["pq"])
    assert all(math.isnan(x["All"]["pq"]) for x in r["per_window"][1:])  # a 1-frame video has no longer window
    assert r["VPQ"] == pytest.approx(100.0) and math.isnan(r["VPQ_th"])  # the official VPQ raises here
    # STQ reads no iscrowd flag: the 'crowd' gt 30 (listed second, instance 1) is an ordinary tube, matched
    assert r["STQ"] == pytest.approx(100.0) and r["AQ"] == pytest.approx(100.0) and r["SQ"] == pytest.approx(100.0)
    # STQ: gt 16 px stuff, pred 12 px stuff + 4 px void
    g2, p2 = np.full((4, 4), 10), np.ones((4, 4), np.int64)
    p2[3] = 0
    r2 = evaluate_vps(*write_case(str(tmp_path / "b"), {"v": [(g2, [{"id": 10, "category_id": 0}], p2,
                                                               [{"id": 1, "category_id": 0}])]}))
    assert r2["SQ"] == pytest.approx(100 * (12 / 16 + 0) / 2) and r2["AQ"] == 0.0
    assert r2["per_window"][0]["Stuff"]["pq"] == pytest.approx(75.0)


def test_undefined_results_are_nan(tmp_path):
    """All-void ground truth: mIoU 0/0 (deeplab2 gives nan too); no category anywhere: VPQ nan (official: raises)."""
    z = np.zeros((4, 4), np.int64)
    r = evaluate_vps(*write_case(str(tmp_path), {"v": [(z, [], z, [])] * 2}))
    assert all(math.isnan(r[k]) for k in ("VPQ", "VPQ_th", "VPQ_st", "SQ", "STQ")) and r["AQ"] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_reference_loops(tmp_path, seed):
    cfg = RandomVPSConfig(num_videos=3, max_frames=10, height=10, width=14, corner_cases=seed % 2 == 0,
                          crowd=seed % 2 == 0)
    p = write_random_vps(str(tmp_path), 100 + seed, cfg)
    try:
        ours = evaluate_vps(p["gt_json"], p["gt_dir"], p["pred_json"], p["pred_dir"])
    except VPSFormatError as e:  # only the official IoU assertion may fire, and the reference must fire too
        assert "invalid IoU" in str(e)
        with pytest.raises(AssertionError):
            evaluate_vps_reference(p["gt_json"], p["gt_dir"], p["pred_json"], p["pred_dir"])
        return
    ref = evaluate_vps_reference(p["gt_json"], p["gt_dir"], p["pred_json"], p["pred_dir"])
    for key in ("VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "SQ"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9, nan_ok=True), key
    for a, b in zip(ours["per_window"], ref["per_window"]):
        for name in ("All", "Things", "Stuff"):
            assert a[name]["pq"] == pytest.approx(b[name]["pq"], abs=1e-9, nan_ok=True)
            assert a[name]["n"] == b[name]["n"]
    assert ours["num_frames"] > 0


def _good(tmp_path):
    return write_case(str(tmp_path), switch_video())


def _edit_pred(paths, fn):
    with open(paths[2]) as f:
        d = json.load(f)
    fn(d)
    with open(paths[2], "w") as f:
        json.dump(d, f)


def test_bad_predictions(tmp_path):
    paths = _good(tmp_path)
    _edit_pred(paths, lambda d: d["annotations"][0]["annotations"][0]["segments_info"].pop())
    with pytest.raises(VPSFormatError, match=r"video 'v', frame 0 .*00000000\.png.*\[2\] are in the PNG but not"):
        evaluate_vps(*paths)
    paths = _good(tmp_path / "b")
    _edit_pred(paths, lambda d: d["annotations"][0]["annotations"][1]["segments_info"].append({"id": 9, "category_id": 1}))
    with pytest.raises(VPSFormatError, match=r"frame 1 .*\[9\] are in the JSON but not in the PNG"):
        evaluate_vps(*paths)
    paths = _good(tmp_path / "c")
    _edit_pred(paths, lambda d: d["annotations"][0]["annotations"][1]["segments_info"][0].update(category_id=7))
    with pytest.raises(VPSFormatError, match=r"video 'v'.*unknown category_id\(s\) \[7\]"):
        evaluate_vps(*paths)
    paths = _good(tmp_path / "d")
    _edit_pred(paths, lambda d: d["annotations"][0]["annotations"].pop())
    with pytest.raises(VPSFormatError, match=r"video 'v': 7 predicted frames, the ground truth has 8"):
        evaluate_vps(*paths)
    paths = _good(tmp_path / "e")
    _edit_pred(paths, lambda d: d["annotations"].clear())
    with pytest.raises(VPSFormatError, match=r"video 'v': the ground-truth video has no predictions"):
        evaluate_vps(*paths)
    paths = _good(tmp_path / "f")
    os.remove(os.path.join(paths[3], "v", "00000003.png"))
    with pytest.raises(VPSFormatError, match=r"video 'v': prediction PNG .*00000003\.png' does not exist"):
        evaluate_vps(*paths)
    paths = _good(tmp_path / "g")
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(os.path.join(paths[3], "v", "00000002.png"))
    with pytest.raises(VPSFormatError, match=r"frame 2 .*prediction PNG is \(5, 4\), ground truth \(4, 4\)"):
        evaluate_vps(*paths)


def test_ground_truth_without_area_is_an_error(tmp_path):
    paths = _good(tmp_path)
    with open(paths[0]) as f:
        d = json.load(f)
    del d["annotations"][0]["annotations"][5]["segments_info"][1]["area"]
    with open(paths[0], "w") as f:
        json.dump(d, f)
    with pytest.raises(VPSFormatError, match=r"video 'v', frame 5 .*misses key\(s\) \['area'\]"):
        evaluate_vps(*paths)


def test_worker_processes_give_the_same_numbers(tmp_path):
    p = write_random_vps(str(tmp_path), 7, RandomVPSConfig(num_videos=3, max_frames=9, height=10, width=14))
    a = evaluate_vps(p["gt_json"], p["gt_dir"], p["pred_json"], p["pred_dir"])
    b = evaluate_vps(p["gt_json"], p["gt_dir"], p["pred_json"], p["pred_dir"], num_workers=2)
    for key in ("VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "SQ"):
        assert a[key] == pytest.approx(b[key], abs=1e-12, nan_ok=True)
    assert a["num_frames"] == b["num_frames"] > 0

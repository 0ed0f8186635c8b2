"""Tests of the YouTube-VIS / OVIS evaluation (local2global.evaluation).

* hand-computed AP values on tiny cases (perfect predictions, known IoUs, one-sided frames, null frames,
  crowd, area ranges from the ``areas`` field, the per-(video, category) cap with stable ties);
* agreement of the fast evaluator with the straightforward re-statement of the official loop
  (``ytvis_reference``) on random sets using every encoding;
* clear errors for malformed predictions / ground truth; atomic writing;
* the detectron2 ``YTVISEvaluator`` cycle on a registered throwaway dataset and the CLI.
"""

import json
import os
import zipfile

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from local2global.evaluation import results_io
from local2global.evaluation.results_io import atomic_write_json
from local2global.evaluation.ytvis import (
    STAT_NAMES,
    YTVISEvaluator,
    evaluate_ytvis,
    main,
    video_track_ious,
)
from local2global.evaluation.ytvis_reference import evaluate_ytvis_reference, make_random_ytvis

pytestmark = pytest.mark.timeout(60)

H, W = 10, 10  # tiny videos of the hand-computed cases


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _rle(rows, cols, h=H, w=W):
    """Compressed RLE (str counts) of the rectangle rows[0]:rows[1], cols[0]:cols[1]."""
    m = np.zeros((h, w), dtype=np.uint8, order="F")
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    r = mask_utils.encode(m)
    return {"size": [h, w], "counts": r["counts"].decode("ascii")}


def _area(seg):
    return int(mask_utils.area(seg)) if seg else None


def _gt(annotations, length, h=H, w=W, num_videos=1, num_cats=2):
    videos = [{"id": v, "height": h, "width": w, "length": length} for v in range(1, num_videos + 1)]
    anns = []
    for i, a in enumerate(annotations):
        a = dict(a)
        a.setdefault("id", i + 1)
        a.setdefault("video_id", 1)
        a.setdefault("category_id", 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("areas", [_area(s) for s in a["segmentations"]])
        anns.append(a)
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, num_cats + 1)]
    return {"videos": videos, "categories": cats, "annotations": anns}


def _pred(segs, score, cat=1, vid=1):
    return {"video_id": vid, "category_id": cat, "score": score, "segmentations": segs}


def _both(gt, preds, **kw):
    """Fast and reference results; asserts they agree (every hand case is also an agreement case)."""
    fast = evaluate_ytvis(gt, preds, **kw)
    ref = evaluate_ytvis_reference(gt, preds, **kw)
    for k in STAT_NAMES:
        assert fast[k] == pytest.approx(ref[k], abs=1e-12), k
    return fast


A = _rle((0, 2), (0, 5))  # 10 px
B = _rle((5, 6), (0, 5))  # 5 px, disjoint from A
C = _rle((5, 10), (5, 10))  # 25 px
C16 = _rle((5, 9), (5, 9))  # 16 px inside C: IoU(C16, C) = 16/25 = 0.64


# --------------------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------------------
def test_perfect_predictions():
    # 2 gt tracks of category 1, each predicted exactly. Every threshold matches both -> AP = 1.
    # maxDets=1 keeps one prediction per (video, category): recall 1/2 -> AR1 = 0.5; AR10 = 1.
    # All areas <= 128^2 -> small: APs = 1, medium / large have no gt -> -1.
    gt = _gt([{"segmentations": [A, B]}, {"segmentations": [C, None]}], length=2)
    preds = [_pred([A, B], 0.9), _pred([C, None], 0.8)]
    r = _both(gt, preds)
    assert [r["AP"], r["AP50"], r["AP75"], r["APs"]] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert (r["APm"], r["APl"]) == (-1.0, -1.0)
    assert [r["AR1"], r["AR10"]] == pytest.approx([0.5, 1.0])


def test_known_iou_064():
    # IoU(C16, C) = 16/25 = 0.64: matched at thresholds 0.50, 0.55, 0.60 (3 of 10), precision 1 there, 0
    # elsewhere -> AP = 0.3, AP50 = 1, AP75 = 0.
    gt = _gt([{"segmentations": [C]}], length=1)
    r = _both(gt, [_pred([C16], 0.7)])
    assert r["AP"] == pytest.approx(0.3)
    assert r["AP50"] == pytest.approx(1.0) and r["AP75"] == 0.0


def test_frame_with_only_one_side_adds_to_union():
    # gt: A (10 px), null.  pred: A, B (5 px).  IoU = 10 / (10 + 5) = 2/3 -> matched at 0.50..0.65 (4 of 10).
    gt = _gt([{"segmentations": [A, None]}], length=2)
    pred = _pred([A, B], 0.5)
    g = results_io.load_ground_truth(gt)
    d = results_io.load_predictions([pred], g)
    np.testing.assert_allclose(video_track_ious(d, g.tracks), [[2 / 3]])
    r = _both(gt, [pred])
    assert r["AP"] == pytest.approx(0.4)
    assert r["AP75"] == 0.0


def test_null_prediction_frame_and_empty_rle():
    # gt: A, B.  pred: A, null -> IoU = 10 / 15.  A present-but-empty RLE behaves like null.
    empty = _rle((0, 0), (0, 0))
    gt = _gt([{"segmentations": [A, B]}], length=2)
    g = results_io.load_ground_truth(gt)
    d = results_io.load_predictions([_pred([A, None], 0.5), _pred([A, empty], 0.4)], g)
    np.testing.assert_allclose(video_track_ious(d, g.tracks), [[2 / 3], [2 / 3]])
    r = _both(gt, [_pred([A, None], 0.5)])
    assert r["AP"] == pytest.approx(0.4)


def test_crowd_is_ignored_not_special_iou():
    # gt: G1 = A (normal), CR = C (crowd).  Predictions by score:
    #   p1 0.9 = C exactly -> matches the crowd gt -> ignored (neither TP nor FP);
    #   p2 0.8 = B (no overlap) -> FP;  p3 0.7 = A -> TP.
    # One non-ignored gt: at recall 1 precision = 1/2 everywhere -> AP = 0.5.
    gt = _gt([{"segmentations": [A]}, {"segmentations": [C], "iscrowd": 1}], length=1)
    preds = [_pred([C], 0.9), _pred([B], 0.8), _pred([A], 0.7)]
    assert _both(gt, preds)["AP"] == pytest.approx(0.5)
    # Without the crowd flag the same predictions give TP, FP, TP over 2 gts:
    # recall 0.5 at precision 1 (51 recall points), recall 1 at precision 2/3 (50 points).
    gt_nc = _gt([{"segmentations": [A]}, {"segmentations": [C]}], length=1)
    assert _both(gt_nc, preds)["AP"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    # Crowd IoU is the ordinary one: C16 inside the crowd region has IoU 0.64 (COCO's crowd IoU would be 1),
    # so at thresholds > 0.64 p1 is a FP ahead of the TP p3: AP = (3 * 1 + 7 * 0.5) / 10.
    preds2 = [_pred([C16], 0.9), _pred([A], 0.7)]
    assert _both(gt, preds2)["AP"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)
    # A crowd gt absorbs several predictions: two copies of C are both ignored -> AP stays 1 with p3.
    assert _both(gt, [_pred([C], 0.9), _pred([C], 0.85), _pred([A], 0.7)])["AP"] == pytest.approx(1.0)


def test_area_ranges_use_gt_areas_field_and_prediction_areas():
    # The gt's 'areas' field says 20000 (0 and null dropped: the mean is 20000, not 6667) -> medium,
    # although its masks are 10 px.  A perfect prediction: APm = 1, APs / APl have no gt -> -1.
    gt = _gt([{"segmentations": [A, A, A], "areas": [20000, 0, None]}], length=3)
    r = _both(gt, [_pred([A, A, A], 0.9)])
    assert [r["AP"], r["APm"]] == pytest.approx([1.0, 1.0]) and (r["APs"], r["APl"]) == (-1.0, -1.0)

    # A small gt, its perfect prediction (score 0.5) and a higher-scored large false positive (> 256^2 px).
    big_h, big_w = 300, 300
    small = _rle((0, 10), (0, 10), big_h, big_w)
    large = _rle((20, 300), (0, 300), big_h, big_w)  # 280 * 300 = 84000 px > 65536
    gt2 = _gt([{"segmentations": [small]}], length=1, h=big_h, w=big_w)
    preds = [_pred([large], 0.9), _pred([small], 0.5)]
    r2 = _both(gt2, preds)
    # all: FP then TP -> precision 1/2 at recall 1 -> AP 0.5;  small: the unmatched large FP is outside the
    # range -> ignored -> APs = 1.
    assert r2["AP"] == pytest.approx(0.5) and r2["APs"] == pytest.approx(1.0)


def test_max_dets_cap_with_stable_ties():
    # 100 false positives then one true positive, all with the same score: the stable sort keeps file order,
    # so the cap of 100 drops the TP -> AP = AR100 = 0.  The TP first -> kept -> AP = 1 (FPs come after).
    gt = _gt([{"segmentations": [A]}], length=1)
    fps = [_pred([B], 0.5) for _ in range(100)]
    tp = _pred([A], 0.5)
    r = evaluate_ytvis(gt, fps + [tp])
    assert r["AP"] == 0.0 and r["AR100"] == 0.0
    r = evaluate_ytvis(gt, [tp] + fps)
    assert r["AP"] == pytest.approx(1.0)
    # with cap 100 versus 101 on the same list
    assert evaluate_ytvis(gt, fps + [tp], max_dets=101)["AR100"] == pytest.approx(1.0)


def test_other_category_does_not_match():
    # Exact mask but wrong category: FP in category 2, no prediction for the category-1 gt -> AP 0.
    gt = _gt([{"segmentations": [A]}], length=1)
    r = _both(gt, [_pred([A], 0.9, cat=2)])
    assert r["AP"] == 0.0 and r["AR10"] == 0.0


# --------------------------------------------------------------------------------------------------------
# agreement with the reference on random sets (all encodings)
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_reference_all_encodings(seed):
    gt, preds = make_random_ytvis(num_videos=12, preds_per_video=15, seed=seed)
    fast = evaluate_ytvis(gt, preds)
    ref = evaluate_ytvis_reference(gt, preds)
    assert list(fast) == STAT_NAMES
    for k in STAT_NAMES:
        assert fast[k] == pytest.approx(ref[k], abs=1e-6), k
    assert 0.0 < fast["AP50"] <= 1.0  # the set has true positives


def test_agrees_with_reference_area_ranges_and_max_dets():
    # Larger frames so small, medium and large tracks all occur; cap 12 exercises the maxDets handling.
    gt, preds = make_random_ytvis(num_videos=10, preds_per_video=14, seed=8, height=400, width=600,
                                  length_range=(2, 4), gt_per_video=(2, 4), side_range=(0.05, 0.95),
                                  gt_encodings=("rle", "polygon"),
                                  pred_encodings=("rle", "polygon", "uncompressed"))
    for max_dets in (100, 12):
        fast = evaluate_ytvis(gt, preds, max_dets=max_dets)
        ref = evaluate_ytvis_reference(gt, preds, max_dets=max_dets)
        for k in STAT_NAMES:
            assert fast[k] == pytest.approx(ref[k], abs=1e-6), (max_dets, k)
    assert all(fast[k] >= 0 for k in ("APs", "APm", "APl"))  # every range has ground truth


def test_long_short_split_matches_reference_subsets():
    gt, preds = make_random_ytvis(num_videos=8, preds_per_video=10, seed=11)
    long_ids = [2, 3, 5]
    r = evaluate_ytvis(gt, preds, long_video_ids=long_ids)
    ref_long = evaluate_ytvis_reference(gt, preds, video_ids=long_ids)["AP"]
    ref_short = evaluate_ytvis_reference(gt, preds, video_ids=[1, 4, 6, 7, 8])["AP"]
    assert r["AP_long"] == pytest.approx(ref_long, abs=1e-6)
    assert r["AP_short"] == pytest.approx(ref_short, abs=1e-6)
    assert r["AP_mean"] == pytest.approx((ref_long + ref_short) / 2, abs=1e-6)


def test_inputs_are_not_modified():
    gt, preds = make_random_ytvis(num_videos=3, preds_per_video=4, seed=5)
    before = json.dumps([gt, preds], sort_keys=True)
    evaluate_ytvis(gt, preds)
    evaluate_ytvis_reference(gt, preds)
    assert json.dumps([gt, preds], sort_keys=True) == before


# --------------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    gt = _gt([{"segmentations": [A, B]}], length=2, num_videos=2)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))

    def write(preds):
        p = tmp_path / "bad_results.json"
        p.write_text(json.dumps(preds))
        return str(p)

    return str(gt_path), write


@pytest.mark.parametrize(
    "pred, pattern",
    [
        ({"video_id": 2, "category_id": 1, "segmentations": [A, B]}, r"video_id 2.*missing key.*score"),
        (_pred([A], 0.5, vid=2), r"video_id 2.*'segmentations' has 1 entries, the video has 2"),
        (_pred([A, B], 0.5, vid=99), r"video_id 99.*another dataset"),
        (_pred([A, B], 0.5, cat=7, vid=2), r"video_id 2.*unknown category_id 7"),
        (_pred([A, _rle((0, 1), (0, 1), 12, 10)], 0.5, vid=2), r"video_id 2.*frame 1: mask size \[12, 10\] differs"),
        (_pred([A, B], float("nan"), vid=2), r"video_id 2.*finite"),
        (_pred([A, {"size": [H, W], "counts": [5, 5]}], 0.5, vid=2), r"video_id 2.*summing to H\*W"),
    ],
)
def test_malformed_predictions_raise(files, pred, pattern):
    gt_path, write = files
    res_path = write([_pred([A, B], 0.9, vid=1), pred])
    with pytest.raises(ValueError, match=pattern) as err:
        evaluate_ytvis(gt_path, res_path)
    assert "bad_results.json" in str(err.value)  # the message names the file


def test_malformed_ground_truth_raises(tmp_path):
    def check(gt, pattern):
        p = tmp_path / "bad_gt.json"
        p.write_text(json.dumps(gt))
        with pytest.raises(ValueError, match=pattern) as err:
            evaluate_ytvis(str(p), [])
        assert "bad_gt.json" in str(err.value)

    good = _gt([{"segmentations": [A, B]}], length=2)
    check({k: v for k, v in good.items() if k != "videos"}, "missing key 'videos'")
    bad = json.loads(json.dumps(good))
    bad["annotations"][0]["segmentations"] = [A]
    check(bad, r"video_id 1.*'segmentations' has 1 entries, the video has 2")
    bad = json.loads(json.dumps(good))
    bad["annotations"][0]["video_id"] = 5
    check(bad, r"video_id 5.*not in 'videos'")
    bad = json.loads(json.dumps(good))
    bad["annotations"][0]["id"] = 0
    check(bad, "positive integer")
    bad = json.loads(json.dumps(good))
    bad["annotations"][0]["segmentations"][1] = _rle((0, 1), (0, 1), 10, 11)
    check(bad, r"video_id 1.*mask size")
    bad = json.loads(json.dumps(good))
    bad["annotations"] = []
    check(bad, "no annotations")
    (tmp_path / "bad_gt.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad_gt.json.*not valid JSON"):
        evaluate_ytvis(str(tmp_path / "bad_gt.json"), [])


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json([{"a": 1}], str(path))
    assert json.loads(path.read_text()) == [{"a": 1}]
    with pytest.raises(TypeError):
        atomic_write_json([object()], str(path))  # fails while serialising

    def boom(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(results_io.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json([{"a": 2}], str(path))
    assert json.loads(path.read_text()) == [{"a": 1}]  # the old, complete file
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary left behind


# --------------------------------------------------------------------------------------------------------
# detectron2 evaluator and CLI
# --------------------------------------------------------------------------------------------------------
def _register(name, gt, tmp_path, **meta):
    from detectron2.data import MetadataCatalog

    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(gt))
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    # dataset ids 1, 2 -> contiguous 1, 0 (deliberately not the identity)
    MetadataCatalog.get(name).set(json_file=str(p), thing_dataset_id_to_contiguous_id={1: 1, 2: 0}, **meta)
    return str(p)


def _model_outputs():
    # SPEC §5 eval output of two videos; contiguous label 1 -> dataset category 1, label 0 -> category 2.
    return [
        {"video_id": 1, "image_size": (H, W), "scores": [0.9, 0.3], "labels": [1, 0],
         "segmentations": [[A, B], [C, None]]},
        {"video_id": 2, "image_size": (H, W), "scores": [0.8], "labels": [0],
         "segmentations": [[None, {"size": [H, W], "counts": C["counts"].encode("ascii")}]]},
    ]


def test_evaluator_cycle_scores_and_writes_results(tmp_path):
    gt = _gt([{"segmentations": [A, B]}, {"video_id": 2, "category_id": 2, "segmentations": [None, C]}],
             length=2, num_videos=2)
    _register("l2g_test_ytvis_eval", gt, tmp_path, long_video_ids=[2])
    out_dir = tmp_path / "out"
    ev = YTVISEvaluator("l2g_test_ytvis_eval", output_dir=str(out_dir))
    ev.reset()
    outs = _model_outputs()
    ev.process([{"video_id": 1}], outs[:1])
    ev.process([{"video_id": 2}], outs[1:])
    res = ev.evaluate()
    segm = res["segm"]
    # video 1: cat-1 gt matched exactly (score 0.9); cat-2 prediction C (0.3) on video 1 has no gt -> FP,
    # but it scores lower than the cat-2 TP of video 2 (0.8), so both categories reach precision 1 -> 100.
    assert segm["AP"] == pytest.approx(100.0) and segm["AP50"] == pytest.approx(100.0)
    assert set(segm) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AP_long", "AP_short", "AP_mean"}
    assert segm["AP_long"] == pytest.approx(100.0) and segm["AP_short"] == pytest.approx(100.0)
    written = json.loads((out_dir / "results.json").read_text())
    assert [(r["video_id"], r["category_id"], r["score"]) for r in written] == [(1, 1, 0.9), (1, 2, 0.3), (2, 2, 0.8)]
    assert written[2]["segmentations"][1]["counts"] == C["counts"]  # bytes counts written as str
    assert sorted(os.listdir(out_dir)) == ["results.json"]  # no zip, no temporaries
    ev.reset()
    assert ev._predictions == []


def test_evaluator_writes_zip_without_annotations(tmp_path, caplog):
    gt = _gt([], length=2, num_videos=2)
    gt["annotations"] = None  # hidden validation set
    _register("l2g_test_ytvis_hidden", gt, tmp_path)
    out_dir = tmp_path / "out"
    ev = YTVISEvaluator("l2g_test_ytvis_hidden", output_dir=str(out_dir), distributed=False)
    ev.reset()
    ev.process([{}, {}], _model_outputs())
    with caplog.at_level("INFO"):
        assert ev.evaluate() == {}
    assert "results.zip" in caplog.text
    with zipfile.ZipFile(out_dir / "results.zip") as zf:
        assert zf.namelist() == ["results.json"]
        assert json.loads(zf.read("results.json")) == json.loads((out_dir / "results.json").read_text())


def test_evaluator_rejects_unknown_label(tmp_path):
    _register("l2g_test_ytvis_label", _gt([{"segmentations": [A, B]}], length=2), tmp_path)
    ev = YTVISEvaluator("l2g_test_ytvis_label", distributed=False)
    bad = {"video_id": 1, "image_size": (H, W), "scores": [0.5], "labels": [5], "segmentations": [[A, B]]}
    with pytest.raises(ValueError, match="video_id 1.*label 5"):
        ev.process([{}], [bad])


def test_cli_prints_table(tmp_path, capsys):
    gt, preds = make_random_ytvis(num_videos=4, preds_per_video=5, seed=3)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(preds))
    (tmp_path / "long.txt").write_text("1\n3\n")
    res = main(["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json"),
                "--long-video-ids", str(tmp_path / "long.txt")])
    out = capsys.readouterr().out
    for key in ("AP", "AP50", "AP75", "APs", "AR10", "AP_long", "AP_short", "AP_mean"):
        assert key in out
    assert f"{res['AP50'] * 100:.2f}" in out  # percent in the table


def test_evaluator_predictions_of_another_dataset(tmp_path):
    _register("l2g_test_ytvis_other", _gt([{"segmentations": [A, B]}], length=2), tmp_path)
    ev = YTVISEvaluator("l2g_test_ytvis_other", output_dir=str(tmp_path / "o"), distributed=False)
    ev.reset()
    ev.process([{}], [{"video_id": 42, "image_size": (H, W), "scores": [0.5], "labels": [1], "segmentations": [[A, B]]}])
    with pytest.raises(ValueError, match=r"l2g_test_ytvis_other.*results.json.*video_id 42.*another dataset"):
        ev.evaluate()
    assert (tmp_path / "o" / "results.json").exists()  # still written, for inspection


def test_cli_reports_bad_file_cleanly(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(_gt([{"segmentations": [A]}], length=1)))
    (tmp_path / "res.json").write_text(json.dumps([_pred([A], 0.5, vid=77)]))
    with pytest.raises(SystemExit) as exc:
        main(["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "res.json" in err and "video_id 77" in err and "another dataset" in err


def test_cli_module_runs_without_double_import_warning():
    """``python -m local2global.evaluation.ytvis`` must not find its module pre-imported by the package
    (runpy's RuntimeWarning; the package imports ``ytvis`` lazily)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "local2global.evaluation.ytvis",
                           "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--results" in proc.stdout

"""Tests of the fast paths of the YouTube-VIS evaluator (local2global.evaluation.ytvis / results_io).

Each fast path is checked against the straightforward code it replaces:

* the event-based ``accumulate`` against pycocotools' own ``COCOeval.accumulate`` (bit-identical arrays);
* the IoU upper bound used for pruning against exact video IoUs (it never prunes a pair that can match);
* the bulk matching of predictions with a single candidate gt against the greedy ``evaluateImg`` loop;
* the regex-cut skeleton parse and the bulk validator against the per-prediction validator on json-parsed
  data, for every encoding and JSON layout, and on adversarial files (escapes, ``true`` elsewhere, keys that
  look like ``counts``), where the result must be the plain json path's (numbers or error);
* the whole evaluator against the reference re-statement of the official loop on crowded scenes (several gts
  of a category, so that gts compete and the greedy loop runs).
"""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from local2global.evaluation import results_io
from local2global.evaluation.ytvis import (
    AREA_RANGES,
    STAT_NAMES,
    _greedy_matches,
    _Matches,
    _PrecomputedCOCOeval,
    evaluate_ytvis,
    iou_upper_bound_prunes,
    video_track_ious,
)
from local2global.evaluation.ytvis_reference import evaluate_ytvis_reference, make_random_ytvis

pytestmark = pytest.mark.timeout(120)

THRS = [min(float(t), 1 - 1e-10) for t in np.linspace(0.5, 0.95, 10)]


# --------------------------------------------------------------------------------------------------------
# accumulate
# --------------------------------------------------------------------------------------------------------
def _random_eval_imgs(rng, num_k, num_i, max_det, p_none=0.3, p_no_gt=0.3):
    """pycocotools-style evalImgs [category][area][image]: None entries, entries without detections or gts,
    score ties, matches, ignored detections and gts; some categories have no gt at all."""
    num_t, out = 10, []
    for k in range(num_k):
        no_gt = rng.random() < p_no_gt
        for a in range(len(AREA_RANGES)):
            for i in range(num_i):
                if rng.random() < p_none:
                    out.append(None)
                    continue
                nd, ng = int(rng.integers(0, 15)), 0 if no_gt else int(rng.integers(0, 5))
                out.append({
                    "image_id": i, "category_id": k, "aRng": AREA_RANGES[a], "maxDet": max_det,
                    "dtIds": list(range(nd)), "gtIds": list(range(ng)),
                    "dtMatches": ((rng.random((num_t, nd)) < 0.3) * rng.integers(1, 50, (num_t, nd))).astype(float),
                    "gtMatches": np.zeros((num_t, ng)),
                    "dtScores": np.round(rng.random(nd), 1).tolist(),  # ties
                    "gtIgnore": (rng.random(ng) < 0.3).astype(int),
                    "dtIgnore": rng.random((num_t, nd)) < 0.2,
                })
    return out


@pytest.mark.parametrize("seed", range(12))
def test_accumulate_equals_pycocotools(seed):
    rng = np.random.default_rng(seed)
    num_k, num_i = int(rng.integers(1, 6)), int(rng.integers(1, 8))
    max_dets = [1, 10, 100] if seed % 2 else [1, 10, int(rng.integers(2, 12))]  # maxDets != 100 cuts entries
    eval_imgs = _random_eval_imgs(rng, num_k, num_i, max_dets[-1])
    ours = _PrecomputedCOCOeval(list(range(num_i)), list(range(num_k)), max_dets, eval_imgs=eval_imgs)
    ref = _PrecomputedCOCOeval(list(range(num_i)), list(range(num_k)), max_dets, eval_imgs=eval_imgs)
    with contextlib.redirect_stdout(io.StringIO()):
        ours.accumulate()
        COCOeval.accumulate(ref)  # pycocotools' own loop
    for key in ("precision", "recall", "scores"):
        assert np.array_equal(ours.eval[key], ref.eval[key]), key
    assert (ref.eval["precision"] > 0).any() and (ref.eval["recall"] > 0).any()  # real values, not only -1 / 0


def test_accumulate_all_empty_and_no_detections():
    # a category whose entries have gts but no detections (recall 0, precision 0) and one with neither (-1)
    ev = [None] * 8
    ev[0] = {"dtScores": [], "dtMatches": np.zeros((10, 0)), "dtIgnore": np.zeros((10, 0)), "gtIgnore": np.array([0, 0])}
    ours = _PrecomputedCOCOeval([1, 2], [1, 2], [1, 10, 100], eval_imgs=ev + [None] * 8)
    ref = _PrecomputedCOCOeval([1, 2], [1, 2], [1, 10, 100], eval_imgs=ev + [None] * 8)
    with contextlib.redirect_stdout(io.StringIO()):
        ours.accumulate()
        COCOeval.accumulate(ref)
    for key in ("precision", "recall", "scores"):
        assert np.array_equal(ours.eval[key], ref.eval[key]), key
    assert ours.eval["recall"][0, 0, 0, 2] == 0.0 and ours.eval["recall"][0, 1, 0, 2] == -1.0


# --------------------------------------------------------------------------------------------------------
# the IoU bound
# --------------------------------------------------------------------------------------------------------
def _track(masks):
    """A Track of binary masks (None = absent frame)."""
    rles = [None if m is None else mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    areas = np.array([0 if m is None else int(m.sum()) for m in masks], dtype=np.int64)
    return results_io.Track(1, 1, 1, 1.0, 0, rles, areas, 0.0)


def _bound_prunes(d, g):
    a, b = d.frame_areas, g.frame_areas
    return bool(iou_upper_bound_prunes(np.array([np.minimum(a, b).sum()]), np.array([a.sum()]), np.array([b.sum()]))[0])


def test_bound_never_prunes_a_possible_match():
    rng = np.random.default_rng(0)
    pruned = kept_below = 0
    for _ in range(300):
        t = int(rng.integers(1, 5))
        masks_d, masks_g = [], []
        for _ in range(t):
            md = rng.random((12, 14)) < rng.uniform(0, 0.7)
            mg = (md & (rng.random((12, 14)) < 0.8)) | (rng.random((12, 14)) < rng.uniform(0, 0.3))
            masks_d.append(None if rng.random() < 0.2 else md)
            masks_g.append(None if rng.random() < 0.2 else mg)
        d, g = _track(masks_d), _track(masks_g)
        iou = float(video_track_ious([d], [g])[0, 0])
        if _bound_prunes(d, g):
            pruned += 1
            assert iou < 0.5
        elif iou < 0.5:
            kept_below += 1  # the bound is an upper bound only: these are computed exactly
    assert pruned > 50 and kept_below > 0


def test_bound_is_exact_for_nested_masks():
    # g inside d on every frame: I = S, so the bound equals the IoU; 0.5 exactly must be kept, just below pruned
    d = np.zeros((4, 10), dtype=bool)
    d[:, :8] = True  # 32 px
    g_half = np.zeros((4, 10), dtype=bool)
    g_half[:, :4] = True  # 16 px: IoU 16/32 = 0.5
    g_less = g_half.copy()
    g_less[0, 3] = False  # 15 px: IoU 15/32 < 0.5
    assert float(video_track_ious([_track([d])], [_track([g_half])])[0, 0]) == 0.5
    assert not _bound_prunes(_track([d]), _track([g_half]))
    assert _bound_prunes(_track([d]), _track([g_less]))
    assert _bound_prunes(_track([None]), _track([g_half]))  # empty intersection: IoU 0


# --------------------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_single_candidate_matching_equals_greedy(seed):
    # Predictions (rows, in score order) have at most one candidate gt (IoU >= 0.5); a gt may have several
    # candidates, some gts are crowds, ignore flags vary per area range: the bulk rule must equal evaluateImg.
    rng = np.random.default_rng(seed)
    num_d, num_g = int(rng.integers(1, 30)), int(rng.integers(1, 6))
    ious = np.zeros((num_d, num_g))
    cand_g = rng.integers(0, num_g, num_d)
    has = rng.random(num_d) < 0.7
    ious[np.flatnonzero(has), cand_g[has]] = np.round(rng.uniform(0.5, 1.0, has.sum()), 2)
    low = (ious == 0) & (rng.random((num_d, num_g)) < 0.3)
    ious[low] = np.round(rng.uniform(0.0, 0.49, low.sum()), 2)  # below 0.5: they play no part
    crowd = rng.random(num_g) < 0.3
    m_d, m_g = np.nonzero(ious >= 0.5)
    t, d, g = _Matches._match_single(m_d, m_g, ious[m_d, m_g], crowd, THRS)
    bulk = np.full((len(THRS), num_d), -1)
    bulk[t, d] = g
    for _ in range(3):
        ignore = rng.random(num_g) < 0.4
        assert np.array_equal(_greedy_matches(ious, crowd, ignore, THRS), bulk)


def test_greedy_matching_prefers_not_ignored_gt():
    # evaluateImg's break: once a not-ignored gt is found, ignored gts (sorted last) are not considered, even
    # with a higher IoU; without a not-ignored candidate the ignored gt matches.
    ious = np.array([[0.6, 0.9]])
    got = _greedy_matches(ious, np.array([False, False]), np.array([False, True]), THRS)
    assert got[0, 0] == 0 and got[2, 0] == 0  # IoU 0.6 reaches 0.50..0.60: the not-ignored gt
    assert got[3, 0] == 1 and got[8, 0] == 1  # above 0.6 only the ignored gt is a candidate: it matches
    got = _greedy_matches(ious, np.array([False, False]), np.array([True, False]), THRS)
    assert got[0, 0] == 1 and got[8, 0] == 1  # the not-ignored gt (IoU 0.9) wins at every threshold


# --------------------------------------------------------------------------------------------------------
# loading: skeleton parse and bulk validation
# --------------------------------------------------------------------------------------------------------
def _arrays_equal(x, y):
    for field in ("video_id", "category_id", "score", "length", "start", "frame_area", "frame_rle", "avg_area",
                  "total_area"):
        assert np.array_equal(getattr(x, field), getattr(y, field)), field
    assert len(x.rles) == len(y.rles)
    for r, s in zip(x.rles, y.rles):
        c1, c2 = r["counts"], s["counts"]
        assert (c1.decode() if isinstance(c1, bytes) else c1) == (c2.decode() if isinstance(c2, bytes) else c2)
        assert list(r["size"]) == list(s["size"])


def _detailed(gt_data, preds):
    return results_io._detailed_prediction_arrays(json.loads(json.dumps(preds)), "<in-memory results>", gt_data)


@pytest.mark.parametrize("seed", [0, 1])
def test_bulk_validator_equals_detailed(seed):
    gt, preds = make_random_ytvis(num_videos=8, preds_per_video=12, seed=seed)  # every encoding
    preds[0]["segmentations"][0] = []  # falsy frames are absent, as the official `if seg:`
    preds[1]["segmentations"][-1] = {}
    gt_data = results_io.load_ground_truth(gt)
    fast = results_io._bulk_prediction_arrays(json.loads(json.dumps(preds)), "<in-memory results>", gt_data)
    assert fast is not None
    _arrays_equal(fast, _detailed(gt_data, preds))


def test_gt_bulk_loader_equals_detailed(tmp_path):
    gt, _ = make_random_ytvis(num_videos=8, preds_per_video=2, seed=5, gt_per_video=(2, 5))  # every encoding
    gt["annotations"][0].pop("areas")  # optional: the masks' own areas are used
    gt["annotations"][1]["segmentations"][0] = []  # falsy frame: absent
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    data = json.loads(json.dumps(gt))
    videos = results_io._parse_videos(data["videos"], "x")
    cat_ids = sorted(c["id"] for c in data["categories"])
    ref = results_io._detailed_gt_tracks(data["annotations"], "x", videos, cat_ids)
    for got in (results_io.load_ground_truth(str(path)).tracks, results_io.load_ground_truth(gt).tracks):
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            assert (a.id, a.video_id, a.category_id, a.iscrowd, a.avg_area) == (b.id, b.video_id, b.category_id,
                                                                                 b.iscrowd, b.avg_area)
            assert np.array_equal(a.frame_areas, b.frame_areas) and a.rles == b.rles


LAYOUTS = {
    "default": {},
    "compact": {"separators": (",", ":")},
    "indented": {"indent": 1},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_skeleton_parse_equals_json(tmp_path, layout):
    gt, preds = make_random_ytvis(num_videos=10, preds_per_video=12, seed=3, height=60, width=90,
                                  pred_encodings=("rle", "rle", "polygon", "uncompressed"))
    gt_data = results_io.load_ground_truth(gt)
    path = tmp_path / "results.json"
    text = json.dumps(preds, **LAYOUTS[layout])
    assert "\\\\" in text  # some RLE strings hold a backslash (escaped in JSON)
    path.write_text(text)
    skeleton = results_io.parse_results_skeleton(str(path))
    assert skeleton is not None and skeleton.whole_objects == (layout != "indented")
    arrays = results_io.load_prediction_arrays(str(path), gt_data)
    _arrays_equal(arrays, _detailed(gt_data, preds))
    assert all(isinstance(r["counts"], bytes) for r in arrays.rles[:50] if isinstance(r, dict))


def _two_sizes():
    """A gt and results whose videos have two frame sizes (videos 1-4: 40x50, videos 5-7: 30x20)."""
    gt, preds = make_random_ytvis(num_videos=4, preds_per_video=8, seed=4, height=40, width=50,
                                  pred_encodings=("rle",))
    gt2, preds2 = make_random_ytvis(num_videos=3, preds_per_video=8, seed=5, height=30, width=20,
                                    pred_encodings=("rle",))
    for v in gt2["videos"]:
        v["id"] += 4
    for a in gt2["annotations"]:
        a["video_id"] += 4
        a["id"] += 1000
    for p in preds2:
        p["video_id"] += 4
    gt["videos"] += gt2["videos"]
    gt["annotations"] += gt2["annotations"]
    return gt, preds + preds2


def test_skeleton_mixed_layouts_and_key_order(tmp_path):
    # two video sizes, RLE objects with "counts" first, an RLE dict with an extra key and one whose size is a
    # tuple-free list of floats: some objects are cut, the others parsed as dicts; the arrays are json's.
    gt, preds = _two_sizes()
    preds[0]["segmentations"] = [{"counts": s["counts"], "size": s["size"]} if isinstance(s, dict) else s
                                 for s in preds[0]["segmentations"]]
    seg = next(s for p in preds[3:] for s in p["segmentations"] if isinstance(s, dict))
    seg["extra"] = 1
    gt_data = results_io.load_ground_truth(gt)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(preds))
    skeleton = results_io.parse_results_skeleton(str(path))
    assert skeleton.whole_objects and 0 < len(skeleton.rles) < sum(1 for p in preds for s in p["segmentations"] if s)
    assert sorted(skeleton.sizes) == [(30, 20), (40, 50)]
    _arrays_equal(results_io.load_prediction_arrays(str(path), gt_data), _detailed(gt_data, preds))
    # a cut object whose size is the other video size: rejected in bulk, reported by the json path
    bad = json.loads(json.dumps(preds))
    p = next(i for i, q in enumerate(bad) if q["video_id"] == 5 and any(q["segmentations"]))
    f = next(t for t, s in enumerate(bad[p]["segmentations"]) if s)
    bad[p]["segmentations"][f]["size"] = [40, 50]
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=rf"video_id 5, prediction {p}, frame {f}: mask size \[40, 50\] differs"):
        results_io.load_prediction_arrays(str(path), gt_data)


def _write(tmp_path, text):
    path = tmp_path / "adversarial.json"
    path.write_text(text)
    return str(path)


def _bulk_from_skeleton(path, gt_data):
    skeleton = results_io.parse_results_skeleton(path)
    if skeleton is None:
        return None
    return results_io._bulk_prediction_arrays(skeleton.data, path, gt_data, skeleton=skeleton)


def test_skeleton_adversarial_files_fall_back(tmp_path):
    gt, preds = make_random_ytvis(num_videos=3, preds_per_video=4, seed=6, pred_encodings=("rle",))
    gt_data = results_io.load_ground_truth(gt)
    ref = _detailed(gt_data, preds)
    base = json.dumps(preds)
    assert _bulk_from_skeleton(_write(tmp_path, base), gt_data) is not None  # the fast path takes the plain file
    for layout in ({}, {"indent": 1}):
        # `true` elsewhere in the file: rejected by the count check
        extra = json.loads(base)
        extra[0]["flag"] = True
        path = _write(tmp_path, json.dumps(extra, **layout))
        assert results_io.parse_results_skeleton(path) is None
        _arrays_equal(results_io.load_prediction_arrays(path, gt_data), ref)
        # a key ending in `"counts` and a prediction-level "counts" string: the whole-object regex leaves them
        # alone (the fast path is right); the key-value regex (indented layout) cuts them, but their markers are
        # not the counts of RLE dicts, so that skeleton is rejected
        for key in ('x"counts', "counts"):
            extra = json.loads(base)
            extra[1][key] = "abc"
            path = _write(tmp_path, json.dumps(extra, **layout))
            assert (_bulk_from_skeleton(path, gt_data) is None) == bool(layout)
            _arrays_equal(results_io.load_prediction_arrays(path, gt_data), ref)
    # an RLE string written with a \u escape: its raw bytes are not the string's -> the json path
    seg = next(s for p in preds for s in p["segmentations"] if s)
    escaped = base.replace(json.dumps(seg["counts"]), json.dumps(seg["counts"]).replace("0", "\\u0030", 1), 1)
    assert "\\u0030" in escaped
    path = _write(tmp_path, escaped)
    assert results_io.parse_results_skeleton(path) is None
    _arrays_equal(results_io.load_prediction_arrays(path, gt_data), ref)
    # NaN score: orjson rejects the literal, json reads it, the validator reports it
    bad = json.loads(base)
    bad[1]["score"] = float("nan")
    path = _write(tmp_path, json.dumps(bad))
    with pytest.raises(ValueError, match=r"adversarial\.json.*prediction 1.*finite"):
        results_io.load_prediction_arrays(path, gt_data)
    # a size mismatch inside a cut object: reported from the json parse, naming video, prediction and frame
    bad = json.loads(base)
    f = next(t for t, s in enumerate(bad[2]["segmentations"]) if s)
    bad[2]["segmentations"][f]["size"] = [7, 9]
    path = _write(tmp_path, json.dumps(bad))
    with pytest.raises(ValueError, match=rf"video_id {bad[2]['video_id']}, prediction 2, frame {f}: mask size \[7, 9\]"):
        results_io.load_prediction_arrays(path, gt_data)


def test_evaluate_from_file_equals_in_memory(tmp_path):
    gt, preds = make_random_ytvis(num_videos=10, preds_per_video=15, seed=9)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(preds))
    assert evaluate_ytvis(str(tmp_path / "gt.json"), str(tmp_path / "res.json")) == evaluate_ytvis(gt, preds)


# --------------------------------------------------------------------------------------------------------
# end to end on crowded scenes
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crowded_scenes_equal_reference(seed):
    # 4-10 objects of 2 categories per video, most predictions copy a gt (several per gt): gts compete, crowds
    # absorb several predictions, and near-duplicate gts give predictions two candidates (greedy loop).
    gt, preds = make_random_ytvis(num_videos=8, preds_per_video=25, seed=seed, height=40, width=60,
                                  gt_per_video=(4, 10), categories_per_video=2, num_categories=4,
                                  copy_prob=0.9, keep_category_prob=0.9, side_range=(0.3, 0.9), crowd_prob=0.2)
    next_id = max(a["id"] for a in gt["annotations"]) + 1
    for a in list(gt["annotations"][::7]):
        dup = json.loads(json.dumps(a))
        dup["id"], next_id = next_id, next_id + 1
        dup["iscrowd"] = int(next_id % 3 == 0)
        dup["segmentations"][len(dup["segmentations"]) // 2] = None  # not identical: a slightly lower IoU
        gt["annotations"].append(dup)
    gt_data = results_io.load_ground_truth(gt)
    matches = _Matches(gt_data, results_io.load_prediction_arrays(preds, gt_data), 100)
    assert matches.num_greedy_groups > 0 and matches.num_candidates < matches.num_pairs
    for max_dets in (100, 10):
        fast = evaluate_ytvis(gt, preds, max_dets=max_dets)
        ref = evaluate_ytvis_reference(gt, preds, max_dets=max_dets)
        for k in STAT_NAMES:
            assert fast[k] == pytest.approx(ref[k], abs=1e-12), (max_dets, k)
    assert fast["AP50"] > 0

"""Tags of the synthetic videos, the hard mode and the per-tag evaluation.

The tags are checked against the files a user reads (the JSON masks and the JPEG frames), and against a
re-render of each video for what the files do not hold (an object's full shape, hidden parts included).
"""

import hashlib
import json
import math
import os
from dataclasses import asdict

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from local2global.data import synthetic
from local2global.data.synthetic import (
    STAMP_NAME,
    TAG_DEFINITIONS,
    TAG_NAMES,
    SyntheticVISConfig,
    ensure_synthetic_vis,
    make_synthetic_vis,
    tags_path,
)
from local2global.evaluation import tags as tag_eval
from local2global.evaluation.ytvis import evaluate_ytvis

pytestmark = pytest.mark.timeout(60)

#: A small default-mode set that holds every base tag (seed chosen so; asserted below).
DEFAULT = dict(seed=1, num_train=0, num_valid=16, height=32, width=48, min_length=8, max_length=40, num_long=0)
#: The same in the hard mode (one of its 12 videos is 200 frames long).
HARD = dict(DEFAULT, num_valid=12, hard=True)
BASE_TAGS = ("crossing", "occlusion", "exit_reentry", "late_entry")
HARD_TAGS = ("lookalike_crossing", "long_occlusion", "camera_jump", "long")
#: The split index of "valid" in the generator's seed streams.
VALID_INDEX = synthetic.SPLITS.index("valid")

#: sha256 of the files of test_data_synthetic's SMALL dataset made by the generator at commit d20b09d, before
#: tags and the hard mode existed (the demo's figures depend on the default dataset staying byte-identical).
SMALL = dict(seed=3, num_train=8, num_valid=3, height=48, width=64, min_length=6, max_length=16, num_long=1,
             long_length=40)
SMALL_SHA256 = {
    "train.json": "305d89299582b74d6fc919a5ecc72a99943f5539fcfcfb11c0119555dfe67d26",
    "valid.json": "8832b738b089263a4cb1c4a5a023502be97596a77c4b19ccafce0acdd171ba01",
}
#: Tolerance added to the lookalike colour threshold and the camera-jump residual when they are re-measured
#: on the JPEG frames (the tags are measured on the frames before JPEG compression).
JPEG_COLOUR_TOLERANCE = 15.0
JPEG_RESIDUAL_TOLERANCE = 0.1


def _make(tmp_path_factory, name, kwargs):
    root = str(tmp_path_factory.mktemp(name) / "ds")
    make_synthetic_vis(root, **kwargs)
    return root


@pytest.fixture(scope="module")
def default_root(tmp_path_factory):
    return _make(tmp_path_factory, "default", DEFAULT)


@pytest.fixture(scope="module")
def hard_root(tmp_path_factory):
    return _make(tmp_path_factory, "hard", HARD)


def _load(root, name):
    with open(os.path.join(root, name)) as f:
        return json.load(f)


def _decode(seg, h, w):
    if seg is None:
        return np.zeros((h, w), dtype=bool)
    return mask_utils.decode(mask_utils.frPyObjects(seg, h, w)).astype(bool)


class _Video:
    """One video as the files hold it (JSON masks, JPEG frames) plus its re-rendered full shapes."""

    def __init__(self, root, kwargs, data, video):
        self.video = video
        self.length, h, w = video["length"], video["height"], video["width"]
        self.anns = [a for a in data["annotations"] if a["video_id"] == video["id"]]
        self.by_id = {a["id"]: i for i, a in enumerate(self.anns)}
        self.masks = np.array([[_decode(s, h, w) for s in a["segmentations"]] for a in self.anns])
        self.frames = [cv2.cvtColor(cv2.imread(os.path.join(root, "valid", "JPEGImages", f)), cv2.COLOR_BGR2RGB)
                       for f in video["file_names"]]
        cfg = SyntheticVISConfig(**kwargs)
        vi = video["id"] - 1
        rng = np.random.default_rng([cfg.seed, VALID_INDEX, synthetic._VIDEO_STREAM, vi])
        hard_rng = (np.random.default_rng([cfg.seed, VALID_INDEX, synthetic._HARD_VIDEO_STREAM, vi])
                    if cfg.hard else None)
        _, tracks, _, full = synthetic._render_video(rng, self.length, cfg, hard_rng)
        kept = [k for k, (_, m) in enumerate(tracks) if any(x.any() for x in m)]
        # the re-render is the file's content: the same tracks, the same visible masks
        assert len(kept) == len(self.anns)
        assert np.array_equal(np.array([tracks[k][1] for k in kept]), self.masks)
        self.full = np.array([full[k] for k in kept])

    def area(self, track_id, t):
        return int(self.masks[self.by_id[track_id], t].sum())

    def full_area(self, track_id, t):
        return int(self.full[self.by_id[track_id], t].sum())


def _videos(root, kwargs):
    data = _load(root, "valid.json")
    return {v["id"]: _Video(root, kwargs, data, v) for v in data["videos"]}


def _check_evidence(root, kwargs):
    """Every tag of the sidecar is true of the files (and of the re-rendered full shapes); returns the sidecar."""
    side = _load(root, "valid_tags.json")
    videos = _videos(root, kwargs)
    thr = side["thresholds"]
    assert set(side["videos"]) == {str(v) for v in videos}
    for vid, names in side["videos"].items():
        v, ev = videos[int(vid)], side["evidence"][vid]
        assert names == [n for n in TAG_NAMES if n in names] and sorted(ev) == sorted(names)
        for e in ev.get("late_entry", []):
            segs = v.anns[v.by_id[e["track"]]]["segmentations"]
            f0 = e["first_visible_frame"]
            assert f0 > 0 and all(s is None for s in segs[:f0]) and segs[f0] is not None
        for e in ev.get("exit_reentry", []):
            segs = v.anns[v.by_id[e["track"]]]["segmentations"]
            a, b = e["last_visible_frame"], e["return_frame"]
            assert segs[a] is not None and segs[b] is not None and b - a >= 2
            assert all(s is None for s in segs[a + 1:b])
            assert any(v.full_area(e["track"], t) == 0 for t in range(a + 1, b))  # wholly outside the frame
        for e in ev.get("occlusion", []):
            i, t = v.by_id[e["track"]], e["frame"]
            assert v.area(e["track"], t) == e["visible_area"] < thr["occlusion_max_visible"] * e["full_area"]
            assert v.full_area(e["track"], t) == e["full_area"] > 0
            hidden = v.full[i, t] & ~v.masks[i, t]
            others = np.delete(v.masks[:, t], i, axis=0).any(0)
            assert hidden.any() and not (hidden & ~others).any()  # every hidden pixel is another track's
            assert (v.masks[v.by_id[e["occluder"]], t] & hidden).any()
        for e in ev.get("long_occlusion", []):
            assert e["frames"] >= thr["long_occlusion_min_frames"]
            for t in range(e["start_frame"], e["start_frame"] + e["frames"]):
                full = v.full_area(e["track"], t)
                assert full > 0 and v.area(e["track"], t) <= thr["long_occlusion_max_visible"] * full
        for name in ("crossing", "lookalike_crossing"):
            for e in ev.get(name, []):
                (i, j), t = (v.by_id[k] for k in e["tracks"]), e["frame"]
                inter = int((v.full[i, t] & v.full[j, t]).sum())
                assert inter >= thr["crossing_min_overlap"] * min(v.full[i, t].sum(), v.full[j, t].sum()) > 0
        for e in ev.get("lookalike_crossing", []):
            a, b = (v.anns[v.by_id[k]] for k in e["tracks"])
            assert a["category_id"] == b["category_id"]
            means = [np.concatenate([v.frames[t][v.masks[v.by_id[k], t]] for t in range(v.length)]).mean(0)
                     for k in e["tracks"]]
            dist = float(np.linalg.norm(means[0] - means[1]))
            assert dist <= thr["lookalike_max_colour_distance"] + JPEG_COLOUR_TOLERANCE
        for e in ev.get("camera_jump", []):
            t, (dx, dy) = e["frame"], e["shift"]
            h, w = v.video["height"], v.video["width"]
            assert math.hypot(dx, dy) >= thr["camera_jump_min_shift"] * min(h, w)
            cur, prev = (cv2.cvtColor(v.frames[k], cv2.COLOR_RGB2GRAY).astype(float) for k in (t, t - 1))
            still = np.abs(cur - prev).mean()
            moved = np.abs(cur[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
                           - prev[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]).mean()
            assert moved <= (thr["camera_jump_max_residual"] + JPEG_RESIDUAL_TOLERANCE) * still
        # the tags that the JSON alone decides are complete: tagged exactly when the files say so
        late = any(next(t for t, s in enumerate(a["segmentations"]) if s is not None) > 0 for a in v.anns)
        assert ("late_entry" in names) == late
        assert ("long" in names) == (v.length >= thr["long_min_frames"])
    counts = {n: sum(n in t for t in side["videos"].values()) for n in TAG_NAMES}
    assert side["counts"] == counts and side["definitions"] == TAG_DEFINITIONS
    return side


def test_default_tags_are_true_of_the_files(default_root):
    side = _check_evidence(default_root, DEFAULT)
    assert side["hard"] is False and side["num_videos"] == DEFAULT["num_valid"]
    for name in BASE_TAGS:
        assert side["counts"][name] >= 1, (name, side["counts"])
    # the default videos have no camera motion and no long video
    assert side["counts"]["camera_jump"] == 0 and side["counts"]["long"] == 0


def test_hard_mode_produces_each_hard_tag_and_they_are_true(hard_root):
    side = _check_evidence(hard_root, HARD)
    assert side["hard"] is True
    for name in HARD_TAGS:
        assert side["counts"][name] >= 1, (name, side["counts"])
    lengths = [v["length"] for v in _load(hard_root, "valid.json")["videos"]]
    assert lengths.count(synthetic.HARD_LONG_LENGTH) == 1  # round(10% of 12)
    stamp = _load(hard_root, STAMP_NAME)
    assert stamp["config"]["hard"] is True


def test_hard_mode_is_deterministic_by_seed(tmp_path):
    kwargs = dict(seed=5, num_train=0, num_valid=2, height=24, width=32, min_length=8, max_length=12, num_long=0,
                  hard=True)
    roots = [str(tmp_path / n) for n in "abc"]
    for root, seed in zip(roots, (5, 5, 6)):
        make_synthetic_vis(root, **dict(kwargs, seed=seed))
    trees = [_tree(r) for r in roots]
    assert trees[0] == trees[1] and len(trees[0]) > 20
    assert trees[0]["valid.json"] != trees[2]["valid.json"]
    assert trees[0]["valid_tags.json"] != trees[2]["valid_tags.json"]


def _tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_default_files_are_unchanged(tmp_path):
    """Two checks: (1) the JSON files of a small default dataset have the bytes that the generator wrote before
    tags and the hard mode existed (hashes taken at commit d20b09d); (2) writing the tags changes no byte of any
    other file (frames, JSONs, stamp): the sidecars are the only difference."""
    with_tags, without = str(tmp_path / "with"), str(tmp_path / "without")
    make_synthetic_vis(with_tags, **SMALL)
    make_synthetic_vis(without, write_tags=False, **SMALL)
    a, b = _tree(with_tags), _tree(without)
    assert {k: a[k] for k in SMALL_SHA256} == SMALL_SHA256
    assert set(a) - set(b) == {"train_tags.json", "valid_tags.json"} and not set(b) - set(a)
    assert all(a[k] == b[k] for k in b) and len(b) > 100
    stamp = _load(with_tags, STAMP_NAME)
    assert "hard" not in stamp["config"]  # the default stamp is the one written before the option existed


def test_ensure_reads_a_stamp_without_hard_as_hard_off(tmp_path):
    root = str(tmp_path / "ds")
    kwargs = dict(DEFAULT, num_valid=1, max_length=8)
    make_synthetic_vis(root, **kwargs)
    # run_demo passes every field (hard=False included) to ensure_synthetic_vis
    assert ensure_synthetic_vis(root, **asdict(SyntheticVISConfig(**kwargs))) == os.path.abspath(root)
    with pytest.raises(ValueError, match="different parameters"):
        ensure_synthetic_vis(root, **dict(kwargs, hard=True))
    with pytest.raises(ValueError, match="hard must be a bool"):
        SyntheticVISConfig(hard=1).validate()


def test_cli_hard_flag_and_no_tags(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_synthetic_vis", os.path.join(os.path.dirname(__file__), "..", "scripts", "make_synthetic_vis.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = ["--num-train", "0", "--num-valid", "1", "--num-long", "0", "--height", "24", "--width", "32",
            "--min-length", "8", "--max-length", "8"]
    assert cli.main(["--output", str(tmp_path / "hard"), "--hard"] + args) == 0
    side = _load(str(tmp_path / "hard"), "valid_tags.json")
    assert side["hard"] is True and side["videos"]["1"] == [n for n in TAG_NAMES if n in side["videos"]["1"]]
    assert "long" in side["videos"]["1"]  # the only video of the split is made long
    assert cli.main(["--output", str(tmp_path / "plain"), "--no-tags"] + args) == 0
    assert not os.path.exists(tags_path(str(tmp_path / "plain"), "valid"))


# ---------------------------------------------------------------------------------------------------------
# per-tag evaluation
# ---------------------------------------------------------------------------------------------------------
def _predictions(gt, good_videos):
    """Perfect tracks on ``good_videos``, masks disjoint from the ground truth (the complement) elsewhere."""
    vids = {v["id"]: v for v in gt["videos"]}
    out = []
    for a in gt["annotations"]:
        v = vids[a["video_id"]]
        if a["video_id"] in good_videos:
            segs = a["segmentations"]
        else:
            segs = []
            for s in a["segmentations"]:
                m = ~_decode(s, v["height"], v["width"])
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                segs.append({"size": rle["size"], "counts": rle["counts"].decode("ascii")})
        out.append({"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9, "segmentations": segs})
    return out


def test_per_tag_ap_perfect_garbage_and_subsets(default_root):
    gt_path = os.path.join(default_root, "valid.json")
    tags_json = tags_path(default_root, "valid")
    gt, side = _load(default_root, "valid.json"), _load(default_root, "valid_tags.json")
    all_ids = {v["id"] for v in gt["videos"]}
    perfect = tag_eval.evaluate_by_tag(gt_path, _predictions(gt, all_ids), tags_json)
    garbage = tag_eval.evaluate_by_tag(gt_path, _predictions(gt, set()), tags_json)
    assert list(perfect) == ["all"] + list(TAG_NAMES)
    for name, row in perfect.items():
        n = len(all_ids) if name == "all" else side["counts"][name]
        assert row["num_videos"] == n == garbage[name]["num_videos"]
        if n:
            assert row["AP"] == pytest.approx(100.0) and row["AP50"] == pytest.approx(100.0)
            assert garbage[name]["AP"] == pytest.approx(0.0) and garbage[name]["AR10"] == pytest.approx(0.0)
        else:  # e.g. "long" in the default mode
            assert math.isnan(row["AP"]) and math.isnan(garbage[name]["AP"])
    # each row is scored on its own videos only: perfect on the late-entry videos, garbage elsewhere
    late = {int(v) for v, t in side["videos"].items() if "late_entry" in t}
    assert 0 < len(late) < len(all_ids)
    preds = _predictions(gt, late)
    mixed = tag_eval.evaluate_by_tag(gt_path, preds, tags_json, tag_names=["late_entry"])
    assert list(mixed) == ["all", "late_entry"]
    assert mixed["late_entry"]["AP"] == pytest.approx(100.0)
    assert 0.0 < mixed["all"]["AP"] < 100.0
    assert mixed["all"]["AP"] == pytest.approx(100.0 * evaluate_ytvis(gt_path, preds)["AP"])


def test_tags_cli_prints_a_table_and_rejects_unknown_videos(default_root, tmp_path, capsys):
    gt = _load(default_root, "valid.json")
    pred_path = tmp_path / "preds.json"
    pred_path.write_text(json.dumps(_predictions(gt, {v["id"] for v in gt["videos"]})))
    out_json = tmp_path / "rows.json"
    rows = tag_eval.main(["--gt-json", os.path.join(default_root, "valid.json"), "--pred-json", str(pred_path),
                          "--tags-json", tags_path(default_root, "valid"), "--json", str(out_json)])
    table = capsys.readouterr().out
    assert "| all" in table and "| late_entry" in table and "100.00" in table
    assert json.loads(out_json.read_text())["all"]["AP"] == pytest.approx(rows["all"]["AP"])
    bad = tmp_path / "bad_tags.json"
    bad.write_text(json.dumps({"999": ["crossing"]}))  # a plain {video_id: [tags]} mapping is accepted too
    with pytest.raises(SystemExit) as exc:
        tag_eval.main(["--gt-json", os.path.join(default_root, "valid.json"), "--pred-json", str(pred_path),
                       "--tags-json", str(bad)])
    assert exc.value.code == 2 and "not in the ground truth" in capsys.readouterr().err

"""The local validation split (``local2global.data.local_split``): the rule, ``scripts/make_local_split.py``, the
registered ``*_train_sub`` / ``*_val_sub`` datasets, the evaluator scoring the held-out half only, and the
``configs/local2global_r50_ytvis19_localval.py`` recipe training on one half and evaluating on the other, on
generated data in the official ``datasets/ytvis_2019/`` layout.
"""

import json
import random
import shutil
from pathlib import Path

import pytest
from script_runner import run_script

from local2global.data.local_split import (
    LOCAL_VAL_FRACTION,
    filter_ytvis_json,
    in_local_val,
    split_video_ids,
    video_key,
)

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[1]
NUM_TRAIN = 4
#: What the rule gives the generated training videos train_0000 .. train_0003 (ids 1..4): train_0002 is held out.
EXPECTED_TRAIN_SUB, EXPECTED_VAL_SUB = [1, 2, 4], [3]


def _need_model_and_data():
    pytest.importorskip("local2global.modeling.segmenter.decoder", reason="the model code is not importable yet")
    pytest.importorskip("local2global.data.build", reason="the data code is not importable yet")


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    """``<root>/ytvis_2019/{train,valid}.json`` + ``{train,valid}/JPEGImages``: synthetic videos in the official
    layout, the file listing the 40 YouTube-VIS 2019 categories (synthetic classes 1..3 = YTVIS ids 1..3)."""
    _need_model_and_data()
    from local2global.data.categories import YTVIS_2019_CATEGORIES
    from local2global.data.synthetic import ensure_synthetic_vis

    base = tmp_path_factory.mktemp("datasets")
    syn = base / "_synthetic"
    ensure_synthetic_vis(str(syn), num_train=NUM_TRAIN, num_valid=1, min_length=4, max_length=5, num_long=0,
                         height=96, width=128)
    yt = base / "ytvis_2019"
    yt.mkdir()
    for split in ("train", "valid"):
        data = json.loads((syn / f"{split}.json").read_text())
        data["categories"] = [{"id": c["id"], "name": c["name"]} for c in YTVIS_2019_CATEGORIES]
        (yt / f"{split}.json").write_text(json.dumps(data))
        shutil.copytree(syn / split, yt / split)
    return base


# ---------------------------------------------------------------------------------------------------- the rule
def test_rule_holds_out_the_stated_fraction_and_is_fixed():
    rng = random.Random(0)
    n = 20000
    keys = [f"{rng.getrandbits(40):010x}" for _ in range(n)]  # YouTube-VIS-like folder names
    share = sum(in_local_val(k) for k in keys) / n
    sigma = (LOCAL_VAL_FRACTION * (1 - LOCAL_VAL_FRACTION) / n) ** 0.5
    assert abs(share - LOCAL_VAL_FRACTION) < 4 * sigma, share
    # about IFR's 400 of the 2,238 YouTube-VIS 2019 training videos
    assert round(LOCAL_VAL_FRACTION * 2238) == 403
    # pinned outcomes: a change of the rule (salt, hash, bytes, comparison) changes these
    assert [in_local_val(f"train_{i:04d}") for i in range(NUM_TRAIN)] == [False, False, True, False]
    assert [in_local_val(f"train_{i:04d}") for i in (13, 14)] == [True, True]
    # a smaller fraction holds out a subset of a larger one's videos (one position per video)
    small = {k for k in keys if in_local_val(k, 0.1)}
    assert small <= {k for k in keys if in_local_val(k, 0.2)} and 0.08 < len(small) / n < 0.12
    with pytest.raises(ValueError, match="fraction must be in"):
        in_local_val("x", 1.5)


def test_video_key_is_the_frame_folder():
    assert video_key(["0043f083b5/00000.jpg", "0043f083b5/00005.jpg"], 7) == "0043f083b5"
    assert video_key(["./0043f083b5/00000.jpg"], 7) == "0043f083b5"
    assert video_key(["0043f083b5\\00000.jpg"], 7) == "0043f083b5"
    assert video_key(["00000.jpg"], 7) == "id:7"
    assert video_key([], 7) == "id:7"


def test_split_is_a_partition_keyed_by_folder_not_id():
    videos = [{"id": i + 1, "file_names": [f"train_{i:04d}/00000.jpg"]} for i in range(15)]
    train, val = split_video_ids(videos)
    assert val == [3, 14, 15] and train == [i for i in range(1, 16) if i not in val]
    # the same folders under other ids (YouTube-VIS 2021 renumbers 2019's videos): the same videos held out
    renumbered = [{"id": 1000 - v["id"], "file_names": v["file_names"]} for v in videos]
    assert split_video_ids(renumbered)[1] == sorted(1000 - i for i in val)
    with pytest.raises(ValueError, match="same frame folder 'train_0000'"):
        split_video_ids(videos + [{"id": 99, "file_names": ["train_0000/00009.jpg"]}])


def test_filter_ytvis_json_keeps_only_the_given_videos():
    data = {"info": {"v": 1}, "categories": [{"id": 1}], "videos": [{"id": 1}, {"id": 2}, {"id": 3}],
            "annotations": [{"id": 10, "video_id": 1}, {"id": 11, "video_id": 3}, {"id": 12, "video_id": 3}]}
    out = filter_ytvis_json(data, [3])
    assert out["videos"] == [{"id": 3}] and [a["id"] for a in out["annotations"]] == [11, 12]
    assert out["info"] == {"v": 1} and out["categories"] == [{"id": 1}]
    assert len(data["videos"]) == 3  # the input is not modified


# ------------------------------------------------------------------------------------------------- the script
def test_script_writes_the_id_lists_of_the_official_json(datasets_root, tmp_path):
    out = tmp_path / "split"
    proc = run_script("make_local_split.py", ["--output", str(out), "--write-json"],
                      env_extra={"DETECTRON2_DATASETS": str(datasets_root)}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"ytvis_2019: {NUM_TRAIN} videos -> train_sub 3, val_sub 1" in proc.stdout
    ids = {part: [int(x) for x in (out / f"ytvis_2019_{part}_ids.txt").read_text().split()]
           for part in ("train_sub", "val_sub")}
    assert ids == {"train_sub": EXPECTED_TRAIN_SUB, "val_sub": EXPECTED_VAL_SUB}
    summary = json.loads((out / "ytvis_2019_local_split.json").read_text())
    assert summary["fraction"] == LOCAL_VAL_FRACTION and summary["num_val_sub"] == 1
    assert summary["val_sub"] == [{"id": 3, "key": "train_0002"}]
    full = json.loads((datasets_root / "ytvis_2019" / "train.json").read_text())
    val_json = json.loads((out / "ytvis_2019_val_sub.json").read_text())
    assert [v["id"] for v in val_json["videos"]] == EXPECTED_VAL_SUB
    assert val_json["annotations"] == [a for a in full["annotations"] if a["video_id"] == 3]
    train_json = json.loads((out / "ytvis_2019_train_sub.json").read_text())
    assert len(train_json["annotations"]) + len(val_json["annotations"]) == len(full["annotations"])

    # the default output folder: local_split/ beside the JSON; a missing JSON is one line and exit status 2
    bad = run_script("make_local_split.py", ["--json", str(tmp_path / "nope.json")], timeout=300)
    assert bad.returncode == 2 and "nope.json' does not exist" in bad.stdout and "Traceback" not in bad.stdout


# --------------------------------------------------------------------------------- datasets and the evaluator
def _perfect_outputs(dicts):
    """Model-style outputs that reproduce every ground-truth track of each dataset dict, score 1."""
    outputs = []
    for d in dicts:
        tracks = {}
        for t, objs in enumerate(d["annotations"]):
            for o in objs:
                tracks.setdefault(o["id"], (o["category_id"], [None] * d["length"]))[1][t] = o["segmentation"]
        outputs.append({"video_id": d["video_id"], "scores": [1.0] * len(tracks),
                        "labels": [c for c, _ in tracks.values()], "segmentations": [s for _, s in tracks.values()]})
    return outputs


def test_registered_halves_and_the_evaluator_scores_the_held_out_half(datasets_root, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from local2global.data.ytvis import register_all_builtin
    from local2global.evaluation.ytvis import GT_SUBSET_JSON_NAME, YTVISEvaluator

    try:
        register_all_builtin(str(datasets_root))
        train = DatasetCatalog.get("ytvis_2019_train_sub")
        val = DatasetCatalog.get("ytvis_2019_val_sub")
        assert [d["video_id"] for d in train] == EXPECTED_TRAIN_SUB
        assert [d["video_id"] for d in val] == EXPECTED_VAL_SUB
        full = DatasetCatalog.get("ytvis_2019_train")
        assert val[0] == next(d for d in full if d["video_id"] == 3)  # the same dicts as the full set's
        meta = MetadataCatalog.get("ytvis_2019_val_sub")
        assert meta.json_file == str(datasets_root / "ytvis_2019" / "train.json") and meta.local_split_part == "val_sub"
        assert meta.thing_classes == MetadataCatalog.get("ytvis_2019_train").thing_classes

        # perfect predictions of the held-out video: AP 100 against the held-out half ...
        ev = YTVISEvaluator("ytvis_2019_val_sub", output_dir=str(tmp_path / "inference"), distributed=False)
        ev.reset()
        ev.process([{"video_id": 3}], _perfect_outputs(val))
        res = ev.evaluate()["segm"]
        assert res["AP"] == pytest.approx(100.0) and res["AR10"] == pytest.approx(100.0)
        gt = json.loads((tmp_path / "inference" / GT_SUBSET_JSON_NAME).read_text())
        assert [v["id"] for v in gt["videos"]] == EXPECTED_VAL_SUB
        assert gt["annotations"] and {a["video_id"] for a in gt["annotations"]} == {3}
        # ... but not against the whole training set, whose other videos they miss
        ev_full = YTVISEvaluator("ytvis_2019_train", output_dir=None, distributed=False)
        ev_full.reset()
        ev_full.process([{"video_id": 3}], _perfect_outputs(val))
        assert ev_full.evaluate()["segm"]["AR10"] < 100.0
    finally:
        register_all_builtin()  # back to the environment's roots


# ---------------------------------------------------------------------------------------------- the recipe
@pytest.mark.slow
def test_localval_recipe_trains_on_one_half_and_evaluates_on_the_other(datasets_root, tmp_path):
    out = tmp_path / "localval"
    args = ["--config-file", "configs/local2global_r50_ytvis19_localval.py",
            "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
            "dataloader.train.mapper.augmentations.0.max_size=160",
            "dataloader.train.total_batch_size=1", "dataloader.train.num_workers=0",
            # no COCO in the generated data: the pseudo-video source is switched off
            "dataloader.train.pseudo_dataset=null", "dataloader.train.pseudo_mapper=null",
            "dataloader.train.pseudo_ratio=0",
            "dataloader.test.mapper.augmentations.0.short_edge_length=128",
            "dataloader.test.mapper.augmentations.0.max_size=160", "dataloader.test.num_workers=0",
            "train.device=cpu", "train.max_iter=2", "train.eval_period=1", "train.log_period=1", "train.seed=0",
            "train.init_checkpoint=", f"train.output_dir={out}"]
    proc = run_script("train_net.py", args, env_extra={"DETECTRON2_DATASETS": str(datasets_root)}, timeout=850)
    assert proc.returncode == 0, proc.stdout[-8000:]
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines() if line.strip()]
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1]
    # train.eval_period=1: scored after iteration 0 and at the end, on the held-out half (annotations public)
    assert [r["iteration"] for r in rows if "segm/AP" in r] == [0, 2]  # the final one is recorded at max_iter
    log = (out / "log.txt").read_text()
    assert f"dataset ytvis_2019_train_sub: {len(EXPECTED_TRAIN_SUB)} entries" in log
    assert f"dataset ytvis_2019_val_sub: {len(EXPECTED_VAL_SUB)} entries" in log
    results = json.loads((out / "inference" / "results.json").read_text())
    assert results and {r["video_id"] for r in results} == set(EXPECTED_VAL_SUB)
    gt = json.loads((out / "inference" / "ground_truth.json").read_text())
    assert [v["id"] for v in gt["videos"]] == EXPECTED_VAL_SUB

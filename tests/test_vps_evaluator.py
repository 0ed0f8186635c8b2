"""The VPS CLI and the detectron2 ``VPSEvaluator`` (prediction contract: per-frame id maps + segments_info)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_vps_metrics import CATS, halves, switch_video, write_case

from local2global.evaluation.vps.evaluate import main
from local2global.evaluation.vps.panoptic_io import VPSFormatError

HAND_VPQ = 50 + 50 * (1 + 6 / 7.5 + 3.5 / 6.5 + (4 / 3) / 4.5) / 5  # test_vps_metrics.test_vpq_stq_hand_computed


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    gt_json, gt_dir, pred_json, pred_dir = write_case(str(tmp_path), switch_video())
    out = str(tmp_path / "res.json")
    main(["--gt-json", gt_json, "--gt-dir", gt_dir, "--pred-json", pred_json, "--pred-dir", pred_dir, "--output", out])
    text = capsys.readouterr().out
    assert "k=35 | Things   |  0.00" in text and f"VPQ {HAND_VPQ:.2f}" in text and "STQ 70.71" in text
    with open(out) as f:
        res = json.load(f)
    assert res["VPQ"] == pytest.approx(HAND_VPQ) and res["STQ"] == pytest.approx(100 * math.sqrt(0.5))
    assert [w["k"] for w in res["per_window"]] == [0, 5, 15, 25, 35]


def test_cli_error_exit(tmp_path):
    gt_json, gt_dir, pred_json, pred_dir = write_case(str(tmp_path), switch_video())
    os.remove(os.path.join(pred_dir, "v", "00000001.png"))
    proc = subprocess.run([sys.executable, "-m", "local2global.evaluation.vps", "--gt-json", gt_json, "--gt-dir",
                           gt_dir, "--pred-json", pred_json, "--pred-dir", pred_dir], capture_output=True, text=True)
    assert proc.returncode == 2 and "00000001.png' does not exist" in proc.stderr


@pytest.fixture
def registered(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from local2global.data.vipseg import register_vipseg_panoptic
    from local2global.data.vipseg_categories import vipseg_metadata

    gt_json, gt_dir, _, _ = write_case(str(tmp_path / "data"), switch_video())
    name = "test_vps_evaluator_ds"
    register_vipseg_panoptic(name, str(tmp_path / "images"), gt_dir, gt_json, metadata=vipseg_metadata(CATS))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_evaluator_on_model_outputs(registered, tmp_path):
    from local2global.evaluation.vps import VPSEvaluator

    ev = VPSEvaluator(registered, output_dir=str(tmp_path / "out"), distributed=False)
    ev.reset()
    maps = [torch.as_tensor(halves(1, 2 if t < 4 else 3)) for t in range(8)]
    segs = [[{"id": 1, "category_id": 0}, {"id": 2 if t < 4 else 3, "category_id": 1},
             {"id": 99, "category_id": 1}] for t in range(8)]  # 99 has no pixels: dropped
    ev.process([{"video_id": 0}], [{"video_id": 0, "panoptic_seg": maps, "segments_info": segs}])
    res = ev.evaluate()["vps"]
    assert res["VPQ"] == pytest.approx(HAND_VPQ) and res["VPQ@k0"] == pytest.approx(100.0)
    assert res["STQ"] == pytest.approx(100 * math.sqrt(0.5)) and res["AQ"] == pytest.approx(50.0)
    # the written folder is the official submission layout, and scores the same through the CLI
    out = tmp_path / "out"
    assert (out / "pan_pred" / "v" / "00000007.png").is_file()
    with open(out / "pred.json") as f:
        entry = json.load(f)["annotations"][0]
    assert entry["video_id"] == "v" and entry["annotations"][0]["segments_info"] == [
        {"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}]
    # a perfect prediction, as one (T, H, W) array, by video name
    ev.reset()
    perfect = np.stack([halves(10, 20)] * 8)
    ev.process([{}], [{"video_name": "v", "panoptic_seg": perfect,
                       "segments_info": [[{"id": 10, "category_id": 0}, {"id": 20, "category_id": 1}]] * 8}])
    res = ev.evaluate()["vps"]
    assert res["VPQ"] == pytest.approx(100.0) and res["STQ"] == pytest.approx(100.0)


def test_evaluator_rejects_bad_outputs(registered, tmp_path):
    from local2global.evaluation.vps import VPSEvaluator

    ev = VPSEvaluator(registered, output_dir=str(tmp_path / "out"), distributed=False)
    maps = [halves(1, 2)] * 8
    with pytest.raises(VPSFormatError, match=r"video 'v', frame 0 .*ids \[2\] have pixels but are not in segments_info"):
        ev.process([{}], [{"video_name": "v", "panoptic_seg": maps, "segments_info": [[{"id": 1, "category_id": 0}]] * 8}])
    with pytest.raises(VPSFormatError, match=r"video 'v': 7 panoptic maps"):
        ev.process([{}], [{"video_name": "v", "panoptic_seg": maps[:7],
                           "segments_info": [[{"id": 1, "category_id": 0}]] * 7}])
    with pytest.raises(VPSFormatError, match=r"frame 0 .*unknown class 5"):
        ev.process([{}], [{"video_name": "v", "panoptic_seg": maps,
                           "segments_info": [[{"id": 1, "category_id": 5}, {"id": 2, "category_id": 1}]] * 8}])
    with pytest.raises(VPSFormatError, match=r"shape \(2, 2\)"):
        ev.process([{}], [{"video_name": "v", "panoptic_seg": [np.ones((2, 2), int)] * 8,
                           "segments_info": [[{"id": 1, "category_id": 0}]] * 8}])

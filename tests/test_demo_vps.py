"""`scripts/run_demo.py --task vps` (`make demo-vps`) at a tiny budget: the stages run on a small synthetic VPS
dataset, VPQ / STQ are written, finite, for the untrained and the trained model, and one video is rendered."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "SQ")


@pytest.mark.slow
def test_run_demo_vps_tiny_budget(tmp_path):
    env = dict(os.environ)
    env.update(DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("L2G_SYNTHETIC_VPS_ROOT", None)
    out = tmp_path / "demo_vps"
    cmd = [sys.executable, str(ROOT / "scripts" / "run_demo.py"), "--task", "vps", "--output", str(out),
           "--num-train", "3", "--num-valid", "2", "--iters-image", "2", "--iters-video", "2", "train.device=cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # the smaller data set has its own folder (never the default one's)
    data = tmp_path / "datasets" / "synthetic_vps_num_train3_num_valid2"
    assert (data / "VIPSeg_720P" / "panoptic_gt_VIPSeg_val.json").is_file()
    assert not (tmp_path / "datasets" / "synthetic_vps").exists()
    for sub in ("untrained", "warmup", "train", "eval", "logs"):
        assert (out / sub).is_dir(), sub
    assert (out / "warmup" / "model_final.pth").is_file() and (out / "train" / "model_final.pth").is_file()
    for run in ("untrained", "eval"):
        ev = json.loads((out / run / "eval_results.json").read_text())["vps"]
        for key in KEYS:
            assert math.isfinite(ev[key]) and 0.0 <= ev[key] <= 100.0, (run, key, ev[key])
        # the evaluator's submission folder: one PNG per held-out frame
        frames = sorted((out / run / "inference" / "pan_pred" / "val_0000").iterdir())
        gt = json.loads((data / "VIPSeg_720P" / "panoptic_gt_VIPSeg_val.json").read_text())
        assert len(frames) == len(gt["videos"][0]["images"])
    doc = json.loads((out / "summary.json").read_text())
    assert doc["task"] == "vps" and doc["seed"] == 0 and doc["num_videos"] == 2
    trained = doc["results"]["Local2Global tiny (trained)"]
    assert all(math.isfinite(trained[k]) for k in KEYS)
    assert doc["seconds"]["total (without install)"] > 0
    summary = (out / "summary.md").read_text()
    assert "| VPQ | VPQ_th | VPQ_st | STQ | AQ | SQ |" in summary and "untrained" in summary
    assert "VPS demo finished in" in log and "STQ" in log
    # the rendered video: the longest held-out video's evaluated maps, one frame per frame, upscaled to >= 256 px
    import imageio.v2 as imageio

    lengths = {v["video_id"]: len(v["images"]) for v in gt["videos"]}
    assert lengths[doc["rendered_video"]] == max(lengths.values())
    gif = imageio.mimread(out / "render" / "video.gif")
    assert len(gif) == max(lengths.values()) and min(gif[0].shape[:2]) >= 256
    assert (out / "render" / "video.mp4").stat().st_size > 0 and (out / "render" / "frame_preview.png").is_file()
    # a re-run skips the finished training stages
    mtime = (out / "train" / "model_final.pth").stat().st_mtime
    proc = subprocess.run(cmd[:2] + ["--skip-untrained"] + cmd[2:], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=540)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    assert (out / "train" / "model_final.pth").stat().st_mtime == mtime


def test_vps_data_flags_are_refused_for_vis(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_demo.py"), "--output", str(tmp_path),
                           "--num-train", "3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "apply to --task vps only" in proc.stderr

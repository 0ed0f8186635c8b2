"""`scripts/demo.py` on a short synthetic video and the whole `make demo` pipeline (`scripts/run_demo.py`) at a
few iterations: every promised output exists and has the right content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]


def _env(datasets: Path) -> dict:
    env = dict(os.environ)
    env.update(DETECTRON2_DATASETS=str(datasets), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("L2G_SYNTHETIC_ROOT", None)
    return env


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Path:
    from local2global.data import ensure_synthetic_vis

    root = tmp_path_factory.mktemp("datasets")
    ensure_synthetic_vis(str(root / "synthetic_vis"))
    return root


def test_demo_script_on_a_short_synthetic_video(datasets, tmp_path):
    valid = json.loads((datasets / "synthetic_vis" / "valid.json").read_text())
    video = min(valid["videos"], key=lambda v: v["length"])
    frames = datasets / "synthetic_vis" / "valid" / "JPEGImages" / Path(video["file_names"][0]).parent
    out = tmp_path / "render"
    cmd = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--config-file",
           str(ROOT / "configs" / "local2global_tiny_synthetic.py"), "--input", str(frames), "--output", str(out),
           "--video-id", str(video["id"]), "--render-scale", "2", "--score-threshold", "0.0",  # untrained: draw every
           "train.device=cpu"]  # slot, so that mask PNGs exist
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(datasets), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    import imageio.v2 as imageio

    mp4 = imageio.mimread(out / "video.mp4")
    gif = imageio.mimread(out / "video.gif")
    assert len(mp4) == len(gif) == video["length"]
    assert mp4[0].shape[:2] == (2 * video["height"], 2 * video["width"])
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 10
    cat_ids = {c["id"] for c in valid["categories"]}
    for r in results:
        assert r["video_id"] == video["id"] and r["category_id"] in cat_ids and 0 <= r["score"] <= 1
        assert len(r["segmentations"]) == video["length"]
    tracks = sorted((out / "masks").iterdir())
    assert tracks, "no per-instance mask PNGs"
    import cv2

    png = cv2.imread(str(next(tracks[0].iterdir())), cv2.IMREAD_UNCHANGED)
    assert png.shape == (video["height"], video["width"]) and set(np.unique(png)) <= {0, 255}
    assert (out / "frame_preview.png").is_file()
    assert not list(out.rglob("*.partial*")), "temporary files left behind"


@pytest.mark.slow
def test_run_demo_pipeline_end_to_end(datasets, tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(ROOT / "scripts" / "run_demo.py"), "--output", str(out), "--iters-image", "2",
           "--iters-video", "2", "train.device=cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(datasets), capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    for sub in ("untrained", "warmup", "train", "eval", "render", "logs"):
        assert (out / sub).is_dir(), sub
    assert (out / "warmup" / "model_final.pth").is_file() and (out / "train" / "model_final.pth").is_file()
    ev = json.loads((out / "eval" / "eval_results.json").read_text())["segm"]
    assert {"AP", "AP50", "AP75", "AR1", "AR10"} <= set(ev) and 0.0 <= ev["AP"] <= 100.0
    summary = (out / "summary.md").read_text()
    assert "Local2Global tiny (trained)" in summary and "untrained" in summary and "| AP |" in summary
    assert (out / "render" / "video.mp4").is_file() and (out / "render" / "results.json").is_file()
    # A re-run skips the finished training stages (their checkpoints are not rewritten).
    mtime = (out / "train" / "model_final.pth").stat().st_mtime
    rerun = cmd[:2] + ["--skip-untrained"] + cmd[2:]
    proc = subprocess.run(rerun, cwd=ROOT, env=_env(datasets), capture_output=True, text=True,
                          timeout=540)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "train" / "model_final.pth").stat().st_mtime == mtime

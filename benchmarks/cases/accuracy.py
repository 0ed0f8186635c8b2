"""Item 6: accuracy of the Table 3 rows on the built-in synthetic benchmark (tiny model, fixed CPU budget).

Protocol, per seed: one single-frame warm-up run of the default tiny recipe (``num_frames=1``: MaskDINO image
mode, the aligner is not used), then for each Table 3 row a clip-training run (``num_frames=3``) started from
that warm-up checkpoint, then ``--eval-only`` on the held-out synthetic videos (YouTube-VIS evaluator):

* ``baseline``        ``model.aligner=null``
* ``+ aligner``       ``model.global_pos=static``
* ``+ trajectory``    the default (aligner + Mask2Box trajectory g_pos)

All runs go through ``scripts/train_net.py`` with ``configs/local2global_tiny_synthetic.py`` (each in its own
process), under ``output/bench_accuracy/seed<s>/...``; a finished run is not repeated. Tracking figures (HOTA,
DetA, AssA, IDF1, ID switches) come from PyPI's ``trackeval`` on the video results with score >= 0.5 when it
is importable (it is not a project dependency: see RESULTS.md for the pins), otherwise they are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from benchmarks.harness import register

from ._common import ROOT

logger = logging.getLogger(__name__)

CONFIG = ROOT / "configs" / "local2global_tiny_synthetic.py"
OUT = ROOT / "output" / "bench_accuracy"
ROWS = {
    "baseline": ["model.aligner=null"],
    "+ aligner": ["model.global_pos=static"],
    "+ trajectory": [],
}
METRICS = ["AP", "AP50", "AP75", "AR1", "AR10"]
TRACK_METRICS = ["HOTA", "DetA", "AssA", "IDF1", "IDSW"]
TRACK_SCORE = 0.5
BUDGETS = {  # (seeds, warm-up iterations, clip iterations)
    True: ([0], 150, 300),
    False: ([0, 1, 2], 300, 600),
}


def _train_net(args: List[str], log: Path) -> None:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "scripts" / "train_net.py"), "--config-file", str(CONFIG), *args]
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}), log {log}:\n{tail}")


def _seconds_per_iter(log: Path) -> Optional[float]:
    for line in reversed(log.read_text().splitlines()):
        if "Overall training speed" in line and "s / it" in line:
            return float(line.rsplit("(", 1)[1].split()[0])
    return None


def _gt_json() -> Path:
    from local2global.data import ensure_synthetic_vis

    root = os.environ.get("L2G_SYNTHETIC_ROOT") or str(Path(os.environ.get("DETECTRON2_DATASETS", ROOT / "datasets"))
                                                         / "synthetic_vis")
    return Path(ensure_synthetic_vis(root)) / "valid.json"


def tracking_metrics(results_json: Path, gt_json: Path, work: Path) -> Optional[Dict[str, float]]:
    """HOTA / DetA / AssA / IDF1 / ID switches (trackeval, class-combined) of the results with score >= 0.5."""
    try:
        import trackeval  # noqa: F401
    except ImportError:
        return None
    from trackeval import Evaluator, metrics
    from trackeval.datasets import YouTubeVIS

    gt_dir = work / "gt" / "youtube_vis_valid"
    tr_dir = work / "trackers" / "youtube_vis_valid" / "model" / "data"
    if work.exists():
        shutil.rmtree(work)
    gt_dir.mkdir(parents=True)
    tr_dir.mkdir(parents=True)
    shutil.copy(gt_json, gt_dir / "valid.json")
    results = [r for r in json.loads(results_json.read_text()) if r["score"] >= TRACK_SCORE]
    (tr_dir / "results.json").write_text(json.dumps(results))
    eval_cfg = {"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
                "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "OUTPUT_EMPTY_CLASSES": False}
    ds_cfg = {"GT_FOLDER": str(work / "gt") + "/", "TRACKERS_FOLDER": str(work / "trackers") + "/",
              "SPLIT_TO_EVAL": "valid", "PRINT_CONFIG": False, "OUTPUT_FOLDER": str(work / "out")}
    evaluator = Evaluator(eval_cfg)
    res, _ = evaluator.evaluate([YouTubeVIS(ds_cfg)], [metrics.HOTA(), metrics.Identity(), metrics.CLEAR()])
    combined = res["YouTubeVIS"]["model"]["COMBINED_SEQ"]["cls_comb_det_av"]
    return {
        "HOTA": 100 * float(combined["HOTA"]["HOTA"].mean()),
        "DetA": 100 * float(combined["HOTA"]["DetA"].mean()),
        "AssA": 100 * float(combined["HOTA"]["AssA"].mean()),
        "IDF1": 100 * float(combined["Identity"]["IDF1"]),
        "IDSW": float(combined["CLEAR"]["IDSW"]),
        "num_tracks": len(results),
    }


def run_seed_row(seed: int, row: str, warm_iters: int, clip_iters: int) -> dict:
    base = OUT / f"w{warm_iters}-c{clip_iters}" / f"seed{seed}"
    warm = base / "warmup"
    common = [f"train.seed={seed}", "train.eval_period=0", "train.checkpointer.period=100000"]
    t0 = time.time()
    if not (warm / "model_final.pth").is_file():
        _train_net(["--resume", f"train.output_dir={warm}", f"train.max_iter={warm_iters}",
                    "dataloader.train.mapper.num_frames=1", *common], warm / "train.log")
    tag = row.replace("+ ", "").replace(" ", "_")
    run = base / tag
    if not (run / "model_final.pth").is_file():
        _train_net(["--resume", f"train.output_dir={run}", f"train.max_iter={clip_iters}",
                    f"train.init_checkpoint={warm / 'model_final.pth'}", "dataloader.train.mapper.num_frames=3",
                    *ROWS[row], *common], run / "train.log")
    ev = base / f"{tag}_eval"
    if not (ev / "eval_results.json").is_file():
        _train_net(["--eval-only", f"train.output_dir={ev}", f"train.init_checkpoint={run / 'model_final.pth'}",
                    *ROWS[row], *common], ev / "eval.log")
    ret = json.loads((ev / "eval_results.json").read_text())
    segm = ret.get("segm", ret)
    out = {k: float(segm[k]) for k in METRICS if k in segm}
    out["clip_s_per_iter"] = _seconds_per_iter(run / "train.log")
    results_json = next(ev.rglob("results.json"), None)
    track = tracking_metrics(results_json, _gt_json(), ev / "trackeval") if results_json else None
    if track:
        out.update(track)
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def _mean_std(values: List[float]) -> List[float]:
    if not values:
        return [float("nan"), float("nan")]
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


@register("accuracy")
def case_accuracy(quick: bool) -> dict:
    """Table 3 rows of the tiny model on the synthetic benchmark under a fixed CPU budget (seeds, mean ± std)."""
    seeds, warm_iters, clip_iters = BUDGETS[quick]
    if os.environ.get("L2G_BENCH_SEEDS"):
        seeds = [int(s) for s in os.environ["L2G_BENCH_SEEDS"].split(",")]
    per_run = {row: {} for row in ROWS}
    for seed in seeds:
        for row in ROWS:
            logger.info("accuracy: seed %d row %s", seed, row)
            per_run[row][seed] = run_seed_row(seed, row, warm_iters, clip_iters)
    try:
        import trackeval  # noqa: F401
        have_trackeval = True
    except ImportError:
        have_trackeval = False
    summary = {}
    for row, runs in per_run.items():
        summary[row] = {k: _mean_std([r[k] for r in runs.values() if r.get(k) is not None])
                        for k in METRICS + (TRACK_METRICS if have_trackeval else [])}
    return {"seeds": seeds, "warmup_iters": warm_iters, "clip_iters": clip_iters, "clip_frames": 3,
            "trackeval": have_trackeval, "track_score_threshold": TRACK_SCORE, "runs": per_run, "summary": summary,
            "config": str(CONFIG.relative_to(ROOT)), "rows": ROWS}

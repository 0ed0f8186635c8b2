"""The tracking benchmark: every tracker on one shared trained segmenter, on tagged hard held-out videos, per seed.

Protocol (per seed s; every run is a ``scripts/train_net.py`` process, cached and resumable under
``output/bench_tracking/``):

1. **Shared segmenter.** The tiny demo recipe (``configs/local2global_tiny_demo.py``) trained in image mode on
   single frames of the default synthetic training set (``dataloader.train.mapper.num_frames=1``, constant lr) for
   ``warm_iters`` iterations with seed s. Its folder is named by a hash of the resolved config, the overrides, the
   training data's stamp and the seed, so every row (and every later run of the benchmark) that needs it reuses it.
   Its per-frame AP (first frame of every held-out video) is reported.
2. **Rows**, each from that checkpoint; they differ only in the tracker (and what its authors train):

   * protocol **A (fine-tune)**: the whole model trains ``clip_iters`` iterations of 5-frame clips with the row's
     tracker, same data, seed and schedule: the Table 3 rows (propagation only, static anchors = the paper's
     reading, or refined boxes carried over; + aligner; + aligner + trajectory) and InsPro-style propagation.
     The aligner rows first train the aligner with the segmenter frozen (**phase 1**, the paper's recipe:
     ``first_frame=learned``, 1-frame pseudo-videos, ``phase1_iters``); they are reported at two budgets: equal
     clip-stage iterations, and equal total iterations (``clip_iters - phase1_iters`` clip iterations);
   * protocol **B (frozen segmenter)**: MinVIS and the per-frame + mask-IoU linking lower bound train nothing;
     DVIS's referring tracker trains only its own modules for ``clip_iters`` iterations.

3. **Evaluation** on ``heldout_videos`` videos of the generator's hard mode (look-alike crossings, occlusions of
   several frames, camera jumps, a tenth long videos of 200 frames; tagged: ``docs/SYNTHETIC.md``), the same videos
   for every seed and row, not seen in training: YouTube-VIS AP and class-agnostic AP, and trackeval's HOTA / DetA /
   AssA / IDF1 / ID switches (class-combined and class-agnostic; one track per slot, every slot of the top-10:
   ``local2global.evaluation.track_metrics``), on all videos and per tag (``local2global.evaluation.tags``).

Statistics: per row the mean ± std over seeds; per row against the Table 3 baseline the paired difference per seed
(mean over seeds) of AP, HOTA, AssA and class-agnostic AssA with a 95% interval from a hierarchical bootstrap
(seeds drawn with replacement, then videos, the same videos for both rows; the observed difference ± 1.96 × the
resampled differences' std; 1000 resamples for the tracking figures, recombined from trackeval's per-video counts,
20 for AP). The smallest difference the protocol resolves is the median half-width of those intervals.
``--quick`` runs the whole pipeline at a tiny budget on a few videos: a smoke test of the pipeline, not powered,
and labelled so. Details: ``docs/TRACKING_BENCHMARK.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.harness import headline, register, renderer

from ._common import ROOT

logger = logging.getLogger(__name__)

OUT = ROOT / "output" / "bench_tracking"
DEMO_CONFIG = "configs/local2global_tiny_demo.py"
#: Seed of the held-out videos' generator (not a training seed: the same videos for every row and seed).
HELDOUT_SEED = 1000
#: The Table 3 baseline every row is compared with.
BASELINE = "prop_static"
#: Overrides of the image-mode warm-up (the demo's: one frame per clip, constant lr).
WARMUP_OVERRIDES = ["dataloader.train.mapper.num_frames=1", "lr_multiplier.scheduler.values=[1.0]",
                    "lr_multiplier.scheduler.milestones=[]"]
#: Phase 1 (paper §4.2): aligner, first-frame embedding, l_pos and ref_point_head train on 1-frame clips.
PHASE1_OVERRIDES = ["model.tracker.first_frame=learned", "dataloader.train.mapper.num_frames=1",
                    "model.criterion.reduced_supervision=False",
                    "train.trainable_params=['tracker.aligner.*','tracker.global_query_embed.*',"
                    "'decoder.decoder.ref_point_head.*']"]
CLIP_OVERRIDES = ["dataloader.train.mapper.num_frames=5", "dataloader.train.mapper.sampling_frame_range=5"]
COMMON = ["train.eval_period=-1", "train.checkpointer.period=100000"]
METRICS = ["AP", "AP50", "AP75", "AR1", "AR10"]


@dataclass(frozen=True)
class Row:
    """One row of the table.

    Attributes:
        name: short id (folder name).
        label: what the table prints.
        protocol: ``"A"`` (fine-tune from the shared segmenter) or ``"B"`` (frozen segmenter).
        config: the row's config file (the demo recipe for Local2Global's rows).
        overrides: the row's overrides (the tracker switches).
        phase1: the aligner is pre-trained with the segmenter frozen first (paper's recipe).
        clip: ``"clip"`` (``clip_iters``), ``"total"`` (``clip_iters - phase1_iters``) or ``"none"`` (no training).
    """

    name: str
    label: str
    protocol: str
    config: str
    overrides: Tuple[str, ...] = ()
    phase1: bool = False
    clip: str = "clip"


ROWS: List[Row] = [
    Row("prop_static", "propagation only, static anchors (Table 3 baseline)", "A", DEMO_CONFIG,
        ("model.tracker.aligner=null", "model.tracker.global_pos=static")),
    Row("prop_refined", "propagation only, refined boxes carried over", "A", DEMO_CONFIG,
        ("model.tracker.aligner=null", "model.tracker.global_pos=refined")),
    Row("aligner", "+ L2G-aligner (static anchors)", "A", DEMO_CONFIG, ("model.tracker.global_pos=static",),
        phase1=True),
    Row("aligner_traj", "+ L2G-aligner + trajectory (Local2Global)", "A", DEMO_CONFIG, (), phase1=True),
    Row("aligner_eqtotal", "+ L2G-aligner, equal total iterations", "A", DEMO_CONFIG,
        ("model.tracker.global_pos=static",), phase1=True, clip="total"),
    Row("aligner_traj_eqtotal", "Local2Global, equal total iterations", "A", DEMO_CONFIG, (), phase1=True,
        clip="total"),
    Row("inspro", "InsPro-style propagation", "A", "configs/benchmarks/tracking/inspro.py"),
    Row("minvis", "MinVIS (training-free)", "B", "configs/benchmarks/tracking/minvis.py", clip="none"),
    Row("iou_link", "per-frame + mask-IoU linking (lower bound)", "B", "configs/benchmarks/tracking/minvis.py",
        ("model.tracker.similarity=mask_iou",), clip="none"),
    Row("dvis", "DVIS referring tracker (frozen segmenter)", "B", "configs/benchmarks/tracking/dvis.py"),
]


@dataclass(frozen=True)
class Budget:
    seeds: Tuple[int, ...]
    warm_iters: int
    phase1_iters: int
    clip_iters: int
    clip_batch: int
    heldout_videos: int
    heldout_min_length: int
    heldout_max_length: int
    bootstrap: int
    powered: bool
    rows: Tuple[str, ...] = field(default_factory=lambda: tuple(r.name for r in ROWS))


BUDGETS = {
    # the demo's warm-up (736 single-frame iterations at batch 8), 120 clip iterations at batch 4, 200 videos
    "full": Budget(seeds=(0, 1, 2), warm_iters=736, phase1_iters=40, clip_iters=120, clip_batch=4,
                   heldout_videos=200, heldout_min_length=4, heldout_max_length=12, bootstrap=20, powered=True,
                   # "+ aligner" at equal total iterations is left out of the full mode for time (its
                   # Local2Global counterpart is in): L2G_TRACKING_ROWS adds it
                   rows=tuple(r.name for r in ROWS if r.name != "aligner_eqtotal")),
    "quick": Budget(seeds=(0,), warm_iters=20, phase1_iters=4, clip_iters=8, clip_batch=2, heldout_videos=12,
                    heldout_min_length=4, heldout_max_length=8, bootstrap=10, powered=False),

}


# ------------------------------------------------------------------------------------------------ runs
#: Evaluations run this many at a time, one thread each: the tiny model's many small operators use a second
#: thread poorly, so two one-thread processes evaluate faster than one two-thread process.
EVAL_WORKERS = 2


def _env(synthetic_root: Optional[str] = None, threads: Optional[int] = None) -> Dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        # both: benchmarks/run.py exports MKL_NUM_THREADS too, and OMP 1 with MKL 2 made every evaluation 4-15x
        # slower (measured: 0.29 vs 2.5 s per video on the quick held-out set, 10 s vs 0.65 on the full one)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(4 << 30))  # as make demo: keep freed activations in the heap
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(64 << 30))
    if synthetic_root:
        env["L2G_SYNTHETIC_ROOT"] = synthetic_root
    return env


def _train_net(config: str, args: Sequence[str], log: Path, synthetic_root: Optional[str] = None,
               threads: Optional[int] = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "scripts" / "train_net.py"), "--config-file", str(ROOT / config), *args]
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=_env(synthetic_root, threads), stdout=f,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}), log {log}:\n{tail}")
    logger.info("tracking: %s done in %.0f s", log.parent.name + "/" + log.name, time.time() - t0)


def _content_key(config: str, overrides: Sequence[str], extra: str) -> str:
    """A hash of the resolved config (after overrides) and ``extra``: the cache key of a shared run."""
    from detectron2.config import LazyConfig
    from omegaconf import OmegaConf

    from local2global.engine.overrides import apply_overrides_strict

    cfg = apply_overrides_strict(LazyConfig.load(str(ROOT / config)), list(overrides))
    cfg.train.output_dir = ""
    text = OmegaConf.to_yaml(cfg, resolve=False) + "\n" + extra
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_root() -> str:
    """The default synthetic training set (the demo's), made when missing."""
    from local2global.data import ensure_synthetic_vis
    from local2global.data.synthetic import SyntheticVISConfig
    from local2global.data.ytvis import synthetic_root

    os.environ.setdefault("DETECTRON2_DATASETS", str(ROOT / "datasets"))
    return ensure_synthetic_vis(synthetic_root(), **asdict(SyntheticVISConfig()))


def heldout_root(b: Budget) -> str:
    """The held-out hard-mode videos (no training videos), made when missing."""
    from local2global.data import ensure_synthetic_vis

    name = f"heldout-hard-{b.heldout_videos}-{b.heldout_min_length}-{b.heldout_max_length}-s{HELDOUT_SEED}"
    return ensure_synthetic_vis(str(OUT / "data" / name / "synthetic_vis"), seed=HELDOUT_SEED, num_train=0,
                                num_valid=b.heldout_videos, min_length=b.heldout_min_length,
                                max_length=b.heldout_max_length, num_long=0, hard=True)


def _run_folder(seed: int, b: Budget) -> Path:
    return OUT / "runs" / f"w{b.warm_iters}-p{b.phase1_iters}-c{b.clip_iters}-b{b.clip_batch}" / f"seed{seed}"


def shared_segmenter(seed: int, b: Budget) -> Path:
    """The image-mode segmenter of ``seed`` (trained once; reused by every row and later runs).

    The first call for a run folder pins the segmenter in ``<run folder>/segmenter.json``: every row of that folder
    then starts from the same checkpoint even if the config files change later (a changed config gives another
    content key, i.e. another segmenter; the rows of one table must not mix them). A changed key is logged.
    """
    root = train_root()
    overrides = [*WARMUP_OVERRIDES, f"train.max_iter={b.warm_iters}", f"train.seed={seed}", *COMMON]
    stamp = (Path(root) / "synthetic_vis.stamp.json").read_text()
    out = OUT / "segmenter" / _content_key(DEMO_CONFIG, overrides, stamp)
    pin = _run_folder(seed, b) / "segmenter.json"
    if pin.is_file():
        pinned = Path(json.loads(pin.read_text())["checkpoint"])
        if pinned.parent != out:
            logger.warning("tracking: seed %d: the config differs from the one of the pinned segmenter %s; the rows "
                           "of %s keep using it (delete the folder to start over)", seed, pinned, pin.parent)
        if pinned.is_file():
            return pinned
    if not (out / "model_final.pth").is_file():
        _train_net(DEMO_CONFIG, ["--resume", f"train.output_dir={out}", *overrides], out / "train.log", root)
    pin.parent.mkdir(parents=True, exist_ok=True)
    pin.write_text(json.dumps({"checkpoint": str(out / "model_final.pth")}))
    return out / "model_final.pth"


def row_lineage(row: Row, seed: int, b: Budget) -> Optional[str]:
    """The segmenter checkpoint a trained row actually started from (its first run's ``config.yaml``)."""
    import yaml

    base = _run_folder(seed, b)
    first = base / (("phase1_static" if "model.tracker.global_pos=static" in row.overrides else "phase1_traj")
                    if row.phase1 else (row.name if row.clip != "none" else f"{row.name}/eval"))
    cfg = first / "config.yaml"
    if not cfg.is_file():
        return None
    return yaml.safe_load(cfg.read_text())["train"]["init_checkpoint"]


def _evaluate(config: str, overrides: Sequence[str], checkpoint: Path, out: Path, heldout: str) -> Path:
    done = out.is_dir() and next(out.rglob("results.json"), None) is not None
    if not done:
        _train_net(config, ["--eval-only", f"train.output_dir={out}", f"train.init_checkpoint={checkpoint}",
                            *overrides, *COMMON], out / "eval.log", heldout, threads=1)
    found = next(out.rglob("results.json"), None)
    if found is None:
        raise RuntimeError(f"no results.json under {out}")
    return found


def train_row(row: Row, seed: int, b: Budget) -> Tuple[Path, Path]:
    """Train one row for one seed as its protocol says; return (checkpoint to evaluate, the row's folder)."""
    seg = shared_segmenter(seed, b)
    base = _run_folder(seed, b)
    seedo = [f"train.seed={seed}"]
    init = seg
    if row.phase1:
        p1 = base / ("phase1_static" if "model.tracker.global_pos=static" in row.overrides else "phase1_traj")
        if not (p1 / "model_final.pth").is_file():
            _train_net(row.config, ["--resume", f"train.output_dir={p1}", f"train.init_checkpoint={seg}",
                                    f"train.max_iter={b.phase1_iters}", *row.overrides, *PHASE1_OVERRIDES, *seedo,
                                    *COMMON], p1 / "train.log", train_root())
        init = p1 / "model_final.pth"
    iters = {"clip": b.clip_iters, "total": b.clip_iters - (b.phase1_iters if row.phase1 else 0), "none": 0}[row.clip]
    run = base / row.name
    ckpt = init
    if iters > 0:
        ckpt = run / "model_final.pth"
        if not ckpt.is_file():
            _train_net(row.config, ["--resume", f"train.output_dir={run}", f"train.init_checkpoint={init}",
                                    f"train.max_iter={iters}", f"dataloader.train.total_batch_size={b.clip_batch}",
                                    *CLIP_OVERRIDES, *row.overrides, *seedo, *COMMON], run / "train.log", train_root())
    return ckpt, run


def evaluate_row(row: Row, seed: int, ckpt: Path, run: Path, heldout: str) -> Path:
    """The row's results.json on the held-out videos (evaluated once)."""
    return _evaluate(row.config, list(row.overrides) + [f"train.seed={seed}"], ckpt, run / "eval", heldout)


def segmenter_frame_ap(seed: int, b: Budget, heldout: str) -> Dict[str, float]:
    """AP of the shared segmenter on the first frame of every held-out video (its per-frame quality)."""
    seg = shared_segmenter(seed, b)
    out = seg.parent / f"first_frame_ap-{Path(heldout).parent.name}.json"
    if not out.is_file():
        cmd = [sys.executable, str(ROOT / "scripts" / "eval_video_prefixes.py"), "--config-file",
               str(ROOT / DEMO_CONFIG), "--checkpoint", str(seg), "--prefixes", "1", "--json", str(out),
               "model.tracker.aligner=null", "model.tracker.global_pos=static"]
        log = seg.parent / "first_frame_ap.log"
        with open(log, "w") as f:
            rc = subprocess.run(cmd, cwd=ROOT, env=_env(heldout, threads=1), stdout=f,
                            stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({rc}); see {log}")
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------ scoring
def _load(path) -> object:
    with open(path) as f:
        return json.load(f)


def _resample(gt: dict, preds_by_video: Dict[int, list], picks: Sequence[int]) -> Tuple[dict, list]:
    """Ground truth and predictions of the videos ``picks`` (indices into gt["videos"], with repeats), each copy
    renumbered so that a video drawn twice counts twice."""
    videos, anns, preds = [], [], []
    anns_by_video: Dict[int, list] = {}
    for a in gt["annotations"]:
        anns_by_video.setdefault(a["video_id"], []).append(a)
    next_ann = 1
    for new_id, i in enumerate(picks, start=1):
        v = gt["videos"][i]
        videos.append(dict(v, id=new_id))
        for a in anns_by_video.get(v["id"], []):
            anns.append(dict(a, id=next_ann, video_id=new_id))
            next_ann += 1
        preds.extend(dict(p, video_id=new_id) for p in preds_by_video.get(v["id"], []))
    return dict(gt, videos=videos, annotations=anns), preds


def _bootstrap_one(gt: dict, by_video: Dict[int, list], picks: np.ndarray) -> np.ndarray:
    from local2global.evaluation.ytvis import evaluate_ytvis

    out = np.empty(len(picks))
    for r, pick in enumerate(picks):
        sub_gt, sub_preds = _resample(gt, by_video, pick)
        out[r] = 100.0 * evaluate_ytvis(sub_gt, sub_preds)["AP"]
    return out


def bootstrap_ap(gt: dict, results: Dict[str, Dict[int, list]], picks: np.ndarray,
                 workers: int = EVAL_WORKERS) -> Dict[str, np.ndarray]:
    """AP (percent) of each run on each bootstrap resample of the videos: ``{run: (R,)}`` (runs in parallel)."""
    from concurrent.futures import ProcessPoolExecutor

    if workers <= 1 or len(results) <= 1:
        return {k: _bootstrap_one(gt, v, picks) for k, v in results.items()}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = {k: pool.submit(_bootstrap_one, gt, v, picks) for k, v in results.items()}
        return {k: job.result() for k, job in jobs.items()}


#: Tracking figures per run (class-aware, and class-agnostic with the suffix ``_agn``): see ``track_figures``.
TRACK_KEYS = ["HOTA", "DetA", "AssA", "IDF1", "IDSW"]
#: The metrics whose paired differences against the baseline get a hierarchical bootstrap interval.
DELTA_KEYS = ["AP", "HOTA", "AssA", "AssA_agn"]
#: Resamples of the hierarchical bootstrap of the tracking figures (cheap: recombined counts, not re-evaluated).
TRACK_BOOTSTRAP = 1000


def track_stats(res_path: Path, gt: dict) -> Dict[str, dict]:
    """trackeval's per-video counts of a run, class-aware and class-agnostic (cached as ``track_stats.json``).

    Tracks are :func:`local2global.evaluation.track_metrics.extract_tracks` with threshold 0: one track per slot
    (its best class) for every slot of the top-k, whatever its score (the trackers' score scales differ).
    """
    from local2global.evaluation import track_metrics as tm

    cache = res_path.parent / "track_stats.json"
    if cache.is_file() and cache.stat().st_mtime >= res_path.stat().st_mtime:
        data = _load(cache)
    else:
        tracks = tm.extract_tracks(_load(res_path))
        agn_gt, agn_tracks = tm.class_agnostic(gt, tracks)
        data = {"aware": tm.stats_to_json(tm.per_video_stats(gt, tracks)),
                "agnostic": tm.stats_to_json(tm.per_video_stats(agn_gt, agn_tracks))}
        cache.write_text(json.dumps(data))
    return {k: tm.stats_from_json(v) for k, v in data.items()}


def agnostic_ap_by_tag(res_path: Path, gt: dict, tags_path: Path) -> Dict[str, float]:
    """Class-agnostic AP (percent) per tag: one track per slot, every category set to one class."""
    from local2global.evaluation import track_metrics as tm
    from local2global.evaluation.tags import evaluate_by_tag

    agn_gt, agn_tracks = tm.class_agnostic(gt, tm.extract_tracks(_load(res_path)))
    return {t: v["AP"] for t, v in evaluate_by_tag(agn_gt, agn_tracks, tags_path).items()}


def _hier_delta_std(row_vals: Dict[int, np.ndarray], base_vals: Dict[int, np.ndarray], rng: np.random.Generator
                    ) -> float:
    """Hierarchical bootstrap of a paired difference: per resample r, seeds drawn with replacement, then the mean
    over the drawn seeds of (row - baseline) on video resample r (the same videos for both rows and every seed).

    Args:
        row_vals, base_vals: ``{seed: (R,)}`` the metric on each of R video resamples.

    Returns:
        The standard deviation of the resampled mean difference (the interval is the observed difference
        +- 1.96 of it: a normal approximation, steadier than percentiles of the AP's few resamples).
    """
    seeds = sorted(set(row_vals) & set(base_vals))
    diffs = np.stack([row_vals[s] - base_vals[s] for s in seeds])  # (S, R)
    r = diffs.shape[1]
    drawn = rng.integers(0, len(seeds), size=(r, len(seeds)))
    d = diffs[drawn, np.arange(r)[:, None]].mean(axis=1)
    return float(np.std(d, ddof=1)) if r > 1 else float("nan")


def _by_video(preds: list) -> Dict[int, list]:
    d: Dict[int, list] = {}
    for p in preds:
        d.setdefault(p["video_id"], []).append(p)
    return d


def _mean_std(values: Sequence[float]) -> List[float]:
    vals = [v for v in values if v == v]
    if not vals:
        return [float("nan"), float("nan")]
    return [statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0]


@register("tracking")
def case_tracking(quick: bool) -> dict:
    """Every tracker on one shared trained segmenter, tagged hard held-out videos, seeds and paired intervals."""
    b = BUDGETS["quick" if quick else "full"]
    seeds = tuple(int(s) for s in os.environ["L2G_TRACKING_SEEDS"].split(",")) if os.environ.get(
        "L2G_TRACKING_SEEDS") else b.seeds
    names = os.environ.get("L2G_TRACKING_ROWS", "").split(",") if os.environ.get("L2G_TRACKING_ROWS") else b.rows
    rows = [r for r in ROWS if r.name in names]
    return tracking_table(b, seeds, rows)


def tracking_table(b: Budget, seeds: Sequence[int], rows: Sequence[Row]) -> dict:
    from local2global.evaluation.tags import evaluate_by_tag

    t_start = time.time()
    heldout = heldout_root(b)
    gt_path, tags_path = Path(heldout) / "valid.json", Path(heldout) / "valid_tags.json"
    gt = _load(gt_path)
    per_run: Dict[str, Dict[str, dict]] = {r.name: {} for r in rows}
    segmenter: Dict[str, dict] = {}
    errors: Dict[str, str] = {}
    results_by_run: Dict[str, Dict[int, list]] = {}
    wall: Dict[str, float] = {}
    lineage: Dict[str, Dict[str, Optional[str]]] = {}
    track_by_run: Dict[str, Dict[str, dict]] = {}
    from concurrent.futures import ThreadPoolExecutor

    from local2global.evaluation import track_metrics as tm
    from local2global.evaluation.tags import load_tags

    all_ids = [v["id"] for v in gt["videos"]]
    tag_ids: Dict[str, List[int]] = {}
    for vid, names in load_tags(tags_path).items():
        for t in names:
            tag_ids.setdefault(t, []).append(vid)

    for seed in seeds:
        t0 = time.time()
        shared_segmenter(seed, b)
        wall[f"segmenter seed {seed}"] = time.time() - t0
        trained = {}
        for row in rows:  # training: one run at a time (each uses every core)
            t0 = time.time()
            try:
                trained[row.name] = train_row(row, seed, b)
            except Exception as e:  # one failing row must not lose the others; it is reported
                logger.exception("tracking: training row %s seed %d failed", row.name, seed)
                errors[f"{row.name}/seed{seed}"] = repr(e)[:500]
            wall[f"{row.name} seed {seed} train"] = time.time() - t0
        t0 = time.time()
        with ThreadPoolExecutor(max_workers=EVAL_WORKERS) as pool:  # evaluations: one thread each, in parallel
            seg_job = pool.submit(segmenter_frame_ap, seed, b, heldout)
            jobs = {name: pool.submit(evaluate_row, next(r for r in rows if r.name == name), seed, ckpt, run, heldout)
                    for name, (ckpt, run) in trained.items()}
            segmenter[str(seed)] = seg_job.result()
            for name, job in jobs.items():
                try:
                    res_path = job.result()
                except Exception as e:
                    logger.exception("tracking: evaluating row %s seed %d failed", name, seed)
                    errors[f"{name}/seed{seed}"] = repr(e)[:500]
                    continue
                preds = _load(res_path)
                tags = evaluate_by_tag(gt, preds, tags_path)
                figures = {tag: {k: v[k] for k in METRICS + ["num_videos"]} for tag, v in tags.items()}
                stats = track_stats(res_path, gt)
                ap_agn = agnostic_ap_by_tag(res_path, gt, tags_path)
                for tag in figures:
                    ids = all_ids if tag == "all" else tag_ids.get(tag, [])
                    for kind, suffix in (("aware", ""), ("agnostic", "_agn")):
                        got = tm.combine(stats[kind], ids) if ids else {k: float("nan") for k in TRACK_KEYS}
                        figures[tag].update({k + suffix: got[k] for k in TRACK_KEYS})
                    figures[tag]["AP_agn"] = ap_agn.get(tag, float("nan"))
                per_run[name][str(seed)] = figures
                track_by_run[f"{name}/{seed}"] = stats
                results_by_run[f"{name}/{seed}"] = _by_video(preds)
        wall[f"evaluation seed {seed}"] = time.time() - t0
        lineage[str(seed)] = {r.name: row_lineage(r, seed, b) for r in rows if r.name in trained}
    # paired bootstrap over videos: the same resampled videos for every row and seed
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(gt["videos"]), size=(b.bootstrap, len(gt["videos"])))
    t0 = time.time()
    boot = bootstrap_ap(gt, results_by_run, picks) if results_by_run else {}
    wall["bootstrap"] = time.time() - t0
    # the tracking figures on TRACK_BOOTSTRAP video resamples (recombined counts), shared by every row and seed
    track_picks = rng.integers(0, len(gt["videos"]), size=(TRACK_BOOTSTRAP, len(gt["videos"])))
    track_boot: Dict[str, Dict[str, np.ndarray]] = {}
    for key, stats in track_by_run.items():
        for kind, suffix in (("aware", ""), ("agnostic", "_agn")):
            vals = tm.combine_resamples(stats[kind], [[all_ids[i] for i in pick] for pick in track_picks])
            for k, v in vals.items():
                track_boot.setdefault(key, {})[k + suffix] = v
    summary = {}
    hier_rng = np.random.default_rng(1)
    for row in rows:
        runs = per_run[row.name]
        if not runs:
            continue
        tags = list(next(iter(runs.values())).keys())
        keys = list(next(iter(runs.values()))["all"].keys())
        keys = [k for k in keys if k != "num_videos"]
        entry = {"seeds": sorted(runs), "tags": {t: {k: _mean_std([runs[s][t][k] for s in runs]) for k in keys}
                                               for t in tags},
                 "num_videos": {t: next(iter(runs.values()))[t]["num_videos"] for t in tags}}
        base = per_run.get(BASELINE, {})
        common = [s for s in runs if s in base]
        if row.name != BASELINE and common:
            entry["delta_seeds"] = common
            entry["delta"], entry["delta_ci95"] = {}, {}
            for k in DELTA_KEYS:
                entry["delta"][k] = _mean_std([runs[s]["all"][k] - base[s]["all"][k] for s in common])
                if k == "AP":
                    row_v = {s: boot.get(f"{row.name}/{s}") for s in common}
                    base_v = {s: boot.get(f"{BASELINE}/{s}") for s in common}
                else:
                    row_v = {s: track_boot.get(f"{row.name}/{s}", {}).get(k) for s in common}
                    base_v = {s: track_boot.get(f"{BASELINE}/{s}", {}).get(k) for s in common}
                if all(v is not None for v in [*row_v.values(), *base_v.values()]):
                    half = 1.96 * _hier_delta_std(row_v, base_v, hier_rng)
                    centre = entry["delta"][k][0]
                    entry["delta_ci95"][k] = [centre - half, centre + half]
        summary[row.name] = entry
    return {"budget": asdict(b), "seeds": list(seeds), "rows": [asdict(r) for r in rows], "summary": summary,
            "per_run": per_run, "segmenter_first_frame": segmenter, "errors": errors, "wall_s": wall,
            "lineage": lineage,
            "heldout": {"root": os.path.relpath(heldout, ROOT), "videos": len(gt["videos"]),
                        "tracks": len(gt["annotations"]), "frames": sum(v["length"] for v in gt["videos"])},
            "total_s": time.time() - t_start}


# ------------------------------------------------------------------------------------------------ report
TAG_COLUMNS = ["crossing", "occlusion", "long_occlusion", "exit_reentry", "late_entry", "lookalike_crossing",
               "camera_jump", "long"]


def _pm(ms: Sequence[float], digits: int = 1) -> str:
    m, s = ms
    return "-" if m != m else f"{m:.{digits}f} ± {s:.{digits}f}"


def _plot(rec: dict) -> Optional[str]:
    """Each row's paired differences against the baseline (ΔAP, ΔHOTA, ΔAssA) with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = rec["figures"]
    summ = {k: e for k, e in f["summary"].items() if e.get("delta_ci95")}
    if not summ:
        return None
    labels = {r["name"]: r["label"] for r in f["rows"]}
    keys = [k for k in DELTA_KEYS if any(k in e["delta_ci95"] for e in summ.values())]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(summ) + 1.5))
    y = 0
    ticks, names = [], []
    for name, e in summ.items():
        for j, k in enumerate(keys):
            if k not in e["delta_ci95"]:
                continue
            lo, hi = e["delta_ci95"][k]
            m = e["delta"][k][0]
            ax.errorbar(m, y + 0.18 * j, xerr=[[m - lo], [hi - m]], fmt="o", ms=3, color=f"C{j}", capsize=2,
                        label=k if not ticks else None)
        ticks.append(y + 0.18 * (len(keys) - 1) / 2)
        names.append(labels.get(name, name))
        y += 1
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("difference to the Table 3 baseline (points), 95% hierarchical bootstrap")
    ax.set_title(f"Tracking benchmark: {len(f['seeds'])} seeds, {f['heldout']['videos']} hard held-out videos"
                 + ("" if f["budget"]["powered"] else " (quick mode, not powered)"), fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    name = "plots/tracking_deltas" + ("" if f["budget"]["powered"] else "_quick") + ".png"
    out = ROOT / "benchmarks" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return name


@renderer("tracking")
def render_tracking(rec: dict) -> str:
    f = rec["figures"]
    b = f["budget"]
    rows = {r["name"]: r for r in f["rows"]}
    lines = []
    if not b["powered"]:
        lines += ["**Quick mode: a smoke test of the pipeline, not powered** "
                  f"({len(f['seeds'])} seed, {f['heldout']['videos']} videos, a few iterations): do not read the "
                  "order of the rows.", ""]
    lines += [f"Shared segmenter: the demo recipe in image mode, {b['warm_iters']} iterations per seed; rows: "
              f"protocol A fine-tunes {b['clip_iters']} iterations of 5-frame clips (batch {b['clip_batch']}); "
              f"the aligner rows first train {b['phase1_iters']} phase-1 iterations with the segmenter frozen; "
              f"protocol B keeps the segmenter frozen. Held-out: {f['heldout']['videos']} hard-mode videos "
              f"({f['heldout']['frames']} frames, {f['heldout']['tracks']} tracks), seeds {f['seeds']}.", ""]
    seg = f["segmenter_first_frame"]
    if seg:
        aps = [v["1"]["AP"] for v in seg.values() if v.get("1") and v["1"]["AP"] is not None]
        lines += [f"Shared segmenter's per-frame AP (first frame of every held-out video): "
                  f"{_pm(_mean_std(aps))} over seeds {sorted(seg)}.", ""]
    for seed, rows_of_seed in f.get("lineage", {}).items():
        used = {os.path.relpath(v, ROOT) if v else "?" for v in rows_of_seed.values()}
        lines.append(f"* Seed {seed}: every row started from one segmenter ({next(iter(used))})." if len(used) == 1
                     else f"* **Seed {seed}: the rows started from different segmenters: {sorted(used)}.**")
    if f.get("lineage"):
        lines.append("")
    summ = f["summary"]
    legacy = any("delta_vs_baseline" in e for e in summ.values())  # a record of the AP-only scoring
    if legacy:
        lines += ["(A record from before the tracking figures: AP only; rerun the case to add HOTA / AssA.)", ""]

    def ci(e, k):
        c = e.get("delta_ci95", {}).get(k)
        return "-" if not c else f"{e['delta'][k][0]:+.1f} [{c[0]:+.1f}, {c[1]:+.1f}]"

    lines += ["Mean ± std over seeds; Δ = the row minus the Table 3 baseline (propagation only, static anchors) on "
              "the same seed, mean over seeds with its hierarchical-bootstrap 95% interval (seeds, then videos; "
              "a difference is resolved when the interval excludes 0). Tracking figures: `trackeval`, one track "
              "per slot (its best class) for every slot of the top-10, class-combined; `agn.` = class-agnostic.", "",
              "| row | protocol | seeds | AP | AP agn. | HOTA | AssA | IDF1 | IDSW | ΔAP | ΔHOTA | ΔAssA | "
              "ΔAssA agn. |", "|---|---|---:|" + "---:|" * 10]
    for name, e in summ.items():
        t = e["tags"]["all"]
        cell = lambda k, d=1: _pm(t[k], d) if k in t else "-"  # noqa: E731
        lines.append(f"| {rows[name]['label']} | {rows[name]['protocol']} | {len(e['seeds'])} | {cell('AP')} | "
                     f"{cell('AP_agn')} | {cell('HOTA')} | {cell('AssA')} | {cell('IDF1')} | {cell('IDSW', 0)} | "
                     f"{ci(e, 'AP')} | {ci(e, 'HOTA')} | {ci(e, 'AssA')} | {ci(e, 'AssA_agn')} |")
    if any("HOTA_agn" in e["tags"]["all"] for e in summ.values()):
        lines += ["", "Class-agnostic tracking figures (every category one class):", "",
                  "| row | HOTA | DetA | AssA | IDF1 | IDSW |", "|---|---:|---:|---:|---:|---:|"]
        for name, e in summ.items():
            t = e["tags"]["all"]
            lines.append(f"| {rows[name]['label']} | " + " | ".join(
                _pm(t[k + "_agn"], 0 if k == "IDSW" else 1) if k + "_agn" in t else "-" for k in TRACK_KEYS) + " |")
    tags = [t for t in TAG_COLUMNS if any(t in e["tags"] for e in summ.values())]
    first = next(iter(summ.values()), None)
    for key, what in (("AP", "AP"), ("AssA_agn", "class-agnostic AssA")):
        if not tags or not any(key in e["tags"].get(tags[0], {}) for e in summ.values()):
            continue
        lines += ["", f"{what} per tag (mean over seeds; videos per tag in the header):", "",
                  "| row | " + " | ".join(f"{t} ({first['num_videos'].get(t, 0)})" for t in tags) + " |",
                  "|---|" + "---:|" * len(tags)]
        for name, e in summ.items():
            cells = []
            for t in tags:
                v = e["tags"].get(t, {}).get(key, [float("nan")])[0]
                cells.append("-" if v != v else f"{v:.1f}")
            lines.append(f"| {rows[name]['label']} | " + " | ".join(cells) + " |")
    resolved = []
    for name, e in summ.items():
        for k in DELTA_KEYS:
            c = e.get("delta_ci95", {}).get(k)
            if c and (c[0] > 0 or c[1] < 0):
                resolved.append(f"{rows[name]['label']}: {k} {e['delta'][k][0]:+.1f} [{c[0]:+.1f}, {c[1]:+.1f}]")
    if any(e.get("delta_ci95") for e in summ.values()):
        lines += ["", "* Resolved differences against the baseline (95% interval excludes 0): "
                  + ("; ".join(resolved) if resolved else "none") + ". Every other difference is within this "
                  "protocol's noise."]
    base = summ.get(BASELINE)
    if base:
        res = []
        for k in DELTA_KEYS:
            halfw = [(e["delta_ci95"][k][1] - e["delta_ci95"][k][0]) / 2 for e in summ.values()
                     if e.get("delta_ci95", {}).get(k)]
            if halfw:
                res.append(f"{k} ±{statistics.median(halfw):.1f} (range {min(halfw):.1f}-{max(halfw):.1f})")
        if res:
            lines += ["", "* Resolution (median 95% half-width of the paired intervals, the smallest difference this "
                      "protocol resolves): " + "; ".join(res) + f". The baseline's seed std: AP "
                      f"{base['tags']['all']['AP'][1]:.1f}"
                      + (f", AssA {base['tags']['all']['AssA'][1]:.1f}" if "AssA" in base["tags"]["all"] else "")
                      + "."]
    try:
        p = _plot(rec)
        if p:
            lines.append(f"\n![{p}]({p})")
    except Exception as e:  # noqa: BLE001
        lines.append(f"(plot failed: {e!r})")
    if f["errors"]:
        lines += ["", "Failed runs: " + "; ".join(f"{k}: {v[:160]}" for k, v in f["errors"].items())]
    lines.append(f"* Wall time: {f['total_s'] / 60:.0f} min for this invocation (cached runs are not repeated).")
    return "\n".join(lines)


@headline("tracking")
def headline_tracking(rec: dict) -> str:
    f = rec["figures"]
    rows = {r["name"]: r for r in f["rows"]}
    parts = [f"{name} AP {_pm(e['tags']['all']['AP'])}"
             + (f", AssA {_pm(e['tags']['all']['AssA'])}" if "AssA" in e["tags"]["all"] else "")
             for name, e in f["summary"].items()]
    mode = "" if f["budget"]["powered"] else " (quick mode, not powered)"
    return (f"Tracking benchmark{mode}, AP on {f['heldout']['videos']} hard held-out videos, seeds {f['seeds']}: "
            + "; ".join(parts) + ".") if rows else "Tracking benchmark: no rows."

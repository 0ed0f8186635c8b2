#!/usr/bin/env python
"""The main job (`make demo`): synthetic data -> train the tiny Local2Global on CPU -> evaluate -> render.

    python scripts/run_demo.py --output output/demo [--iters-image 736 --iters-video 234 --num-frames 5] [--seed 0]
    python scripts/run_demo.py --task vps [--output output/demo_vps]          # `make demo-vps`: VPQ / STQ

``--task vps`` runs the same stages on the synthetic video panoptic dataset (VIPSeg's on-disk format,
``$DETECTRON2_DATASETS/synthetic_vps``; ``local2global.data.synthetic_vps``) with the tiny VPS recipe
(``configs/local2global_tiny_synthetic_vps.py``): data, untrained, warm-up, video, eval with the VPS evaluator
(VPQ / STQ table), render (the evaluated panoptic maps of one held-out video); ``summary.md`` and ``summary.json`` hold the figures and the stage times.

Stages (each one a separate, resumable step; a finished step is skipped when the script is re-run):

1. **data**: the built-in synthetic YouTube-VIS dataset (``$DETECTRON2_DATASETS/synthetic_vis``, made when
   missing, deterministic by seed).
2. **untrained**: the randomly initialised model evaluated on the held-out videos (the AP floor, about 0).
3. **warm-up** on single frames (``num_frames=1``: MaskDINO image mode, the segmenter learns to segment
   before it has to track; the paper's recipe starts from COCO-pretrained weights instead), at a constant learning
   rate: the video stage starts again at the full rate, so a drop at the end of the warm-up would be undone
   (measured on 200 held-out videos at half the budget: first 8 frames AP 11.9 without the drop, 11.3 with it).
4. **video** training on clips (``num_frames=5``, sampled within ±5 frames) initialised from the warm-up, with
   the L2G-aligner, query propagation and reduced supervision (5-frame clips rather than 3: the propagated queries
   drift over long videos, measured AP 24.2 vs 21.8 at about the same training time).
5. **eval**: the trained model on the held-out synthetic videos with the YouTube-VIS evaluator (AP table).
6. **render**: online inference on one held-out video -> ``render/video.mp4`` / ``video.gif`` / mask PNGs.

Everything goes under ``--output`` (see the README's "Output of make demo"); ``summary.md`` collects the AP
tables and the wall time of each stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local2global_tiny_demo.py"
VPS_CONFIG = ROOT / "configs" / "local2global_tiny_synthetic_vps.py"
#: The VPS demo's iterations (single-frame warm-up, clip training): sized to stay under 15 minutes on 2 CPU cores
#: (docs/VPS.md has the measured run).
VPS_ITERS_IMAGE = 736
VPS_ITERS_VIDEO = 234
#: The VPS figures in the demo's table (percent).
VPS_REPORTED = ["VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "SQ"]
logger = logging.getLogger("local2global.run_demo")

from local2global.engine.metrics import REPORTED, read_final_metrics  # noqa: E402


_PROGRESS = re.compile(r"eta: (\S+)\s+iter: (\d+)\s+total_loss: (\S+)")


def _console_line(line: str) -> Optional[str]:
    """What of a stage's log is echoed to the console: a compact progress line, results and errors."""
    m = _PROGRESS.search(line)
    if m:
        return f"iter {int(m.group(2)) + 1:>5}  total_loss {m.group(3):>8}  eta {m.group(1)}"
    if any(k in line for k in ("copypaste", "Traceback", "Error", "error:")):
        return line.rstrip()
    return None


def _run(cmd: List[str], log_file: Path, env: Dict[str, str]) -> None:
    """Run ``cmd``, tee its output to ``log_file``; raise with the log's tail if it fails."""
    logger.info("$ %s", " ".join(cmd))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            short = _console_line(line)
            if short:
                sys.stdout.write("    " + short + "\n")
                sys.stdout.flush()
        rc = proc.wait()
    if rc != 0:
        tail = "".join(open(log_file).readlines()[-40:])
        raise RuntimeError(f"command failed with exit code {rc} (log: {log_file}):\n{tail}")


def _read_final_metrics(run_dir: Path) -> Optional[Dict[str, float]]:
    """The ``segm`` figures of a run's last evaluation (:func:`local2global.engine.metrics.read_final_metrics`)."""
    found = read_final_metrics(str(run_dir))
    if found is None:
        return None
    return {k.split("/", 1)[1]: float(v) for k, v in found.items() if k.startswith("segm/")}


def _table(rows: Dict[str, Dict[str, float]], keys: List[str] = REPORTED) -> str:
    head = "| model | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys) + "\n"
    body = ""
    for name, m in rows.items():
        body += f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.1f}" for k in keys) + " |\n"
    return head + body


def _read_vps_metrics(run_dir: Path) -> Optional[Dict[str, float]]:
    """The ``vps`` figures (VPQ, STQ, ...) of an ``--eval-only`` run (its ``eval_results.json``)."""
    path = run_dir / "eval_results.json"
    if not path.is_file():
        return None
    found = json.loads(path.read_text()).get("vps")
    return {k: float(v) for k, v in found.items()} if found else None


#: Environment that pins the instruction set of every CPU kernel library torch uses (ATen's own vectorised
#: kernels, oneDNN's convolutions, MKL's BLAS with conditional numerical reproducibility). Each library alone
#: changes training from the first iteration when its ISA changes (measured: docs/EXPERIMENTS.md).
CPU_ISA_ENV = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}

#: Per task: the recipe, the output folder, the two stages' iterations and how a run's figures are read.
TASKS = {
    "vis": {"config": CONFIG, "output": "output/demo", "iters_image": 736, "iters_video": 234},
    "vps": {"config": VPS_CONFIG, "output": "output/demo_vps", "iters_image": VPS_ITERS_IMAGE,
            "iters_video": VPS_ITERS_VIDEO},
}


def _prepare_vps_data(args, env: Dict[str, str]) -> Path:
    """The synthetic VPS dataset of the demo (default parameters unless ``--num-train`` / ``--num-valid``), made when
    missing; every stage's ``train_net`` reads it through ``$L2G_SYNTHETIC_VPS_ROOT``."""
    from local2global.data.synthetic_vps import SyntheticVPSConfig, ensure_synthetic_vps, synthetic_vps_root  # noqa: E402

    params = asdict(SyntheticVPSConfig())
    custom = {k: v for k, v in (("num_train", args.num_train), ("num_valid", args.num_valid)) if v is not None}
    params.update(custom)
    root = Path(synthetic_vps_root(env["DETECTRON2_DATASETS"]))
    if custom and "L2G_SYNTHETIC_VPS_ROOT" not in os.environ:  # a smaller set never replaces the default one
        root = root.with_name(root.name + "".join(f"_{k}{v}" for k, v in sorted(custom.items())))
    env["L2G_SYNTHETIC_VPS_ROOT"] = str(root)
    return Path(ensure_synthetic_vps(str(root), **params))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="vis",
                        help="vis: YouTube-VIS-format data, AP (make demo); vps: VIPSeg-format data, VPQ / STQ "
                             "(make demo-vps)")
    parser.add_argument("--output", default=None, help="default: output/demo (vis), output/demo_vps (vps)")
    parser.add_argument("--config-file", default=None, help="default: the task's demo recipe")
    parser.add_argument("--iters-image", type=int, default=None,
                        help="single-frame warm-up iterations (default: vis 736, vps %d)" % VPS_ITERS_IMAGE)
    parser.add_argument("--iters-video", type=int, default=None,
                        help="clip training iterations (default: vis 234, vps %d)" % VPS_ITERS_VIDEO)
    parser.add_argument("--num-frames", type=int, default=5, help="frames per training clip in the video stage")
    parser.add_argument("--frame-range", type=int, default=5,
                        help="clip frames are sampled within +-this many frames of a reference frame")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-isa", choices=sorted(CPU_ISA_ENV), default="native",
                        help="native: every CPU kernel library picks this CPU's best instruction set (the README's "
                             "figures); avx2: ATen, oneDNN and MKL pinned to AVX2, for runs meant to agree across "
                             "x86 machines (own default output folder; see docs/EXPERIMENTS.md)")
    parser.add_argument("--render-video", type=int, default=None, help="held-out video id to render (default: longest)")
    parser.add_argument("--skip-untrained", action="store_true", help="do not evaluate the untrained model")
    parser.add_argument("--render-score-threshold", type=float, default=0.3,
                        help="per-frame class probability from which a track is drawn in the rendered video")
    parser.add_argument("--num-train", type=int, default=None,
                        help="vps: training videos of the synthetic VPS data (default: the generator's)")
    parser.add_argument("--num-valid", type=int, default=None,
                        help="vps: held-out videos of the synthetic VPS data (default: the generator's)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides for every stage")
    args = parser.parse_args(argv)
    task = TASKS[args.task]
    # stages trained under different instruction sets must not be mixed in one (resumable) output folder
    args.output = args.output or (task["output"] + ("" if args.cpu_isa == "native" else f"_{args.cpu_isa}"))
    args.config_file = args.config_file or str(task["config"])
    args.iters_image = task["iters_image"] if args.iters_image is None else args.iters_image
    args.iters_video = task["iters_video"] if args.iters_video is None else args.iters_video
    if args.task == "vis" and (args.num_train is not None or args.num_valid is not None):
        parser.error("--num-train / --num-valid apply to --task vps only")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s demo] %(message)s", datefmt="%H:%M:%S")

    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DETECTRON2_DATASETS", str(ROOT / "datasets"))
    env.setdefault("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))
    # glibc returns every freed block above its mmap threshold to the OS, so each multi-MB activation of a
    # training step is page-faulted in afresh (measured: a 64 MB torch.zeros at 3 GB/s instead of 28 GB/s on
    # this project's 2-core VMs); keeping freed memory in the heap made the demo's steps 5-8% faster.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(4 << 30))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(64 << 30))
    env.update(CPU_ISA_ENV[args.cpu_isa])
    if args.cpu_isa != "native":
        logger.info("CPU kernels pinned to %s: %s", args.cpu_isa,
                    " ".join(f"{k}={v}" for k, v in CPU_ISA_ENV[args.cpu_isa].items()))
    py = sys.executable
    train_net = str(ROOT / "scripts" / "train_net.py")
    common = [f"train.seed={args.seed}", *args.opts]
    timings: Dict[str, float] = {}
    t_all = time.time()

    # 1. data
    t0 = time.time()
    os.environ["DETECTRON2_DATASETS"] = env["DETECTRON2_DATASETS"]
    if args.task == "vps":
        data_root = _prepare_vps_data(args, env)
        read_metrics = _read_vps_metrics
    else:
        from local2global.data import ensure_synthetic_vis  # noqa: E402  (after the env is set)
        from local2global.data.ytvis import synthetic_root  # noqa: E402

        # The demo's figures are for the default dataset: a dataset made with other parameters (e.g. an older,
        # smaller default) at the same root is refused with a message naming the differences.
        from local2global.data.synthetic import SyntheticVISConfig  # noqa: E402

        data_root = Path(ensure_synthetic_vis(synthetic_root(), **asdict(SyntheticVISConfig())))
        read_metrics = _read_final_metrics
    timings["data"] = time.time() - t0
    logger.info("synthetic dataset ready at %s (%.1f s)", data_root, timings["data"])

    results: Dict[str, Dict[str, float]] = {}
    # 2. untrained
    untrained = out / "untrained"
    if not args.skip_untrained:
        t0 = time.time()
        if read_metrics(untrained) is None:
            _run([py, train_net, "--config-file", args.config_file, "--eval-only",
                  f"train.output_dir={untrained}", "train.init_checkpoint=", *common], out / "logs" / "untrained.log", env)
        results["untrained (random init)"] = read_metrics(untrained) or {}
        timings["untrained eval"] = time.time() - t0

    # 3. warm-up on single frames
    warm = out / "warmup"
    t0 = time.time()
    if not (warm / "model_final.pth").is_file():
        _run([py, train_net, "--config-file", args.config_file, "--resume",
              f"train.output_dir={warm}", f"train.max_iter={args.iters_image}",
              "dataloader.train.mapper.num_frames=1", "train.eval_period=-1",
              # constant lr (see the module docstring): one value, no drop
              "lr_multiplier.scheduler.values=[1.0]", "lr_multiplier.scheduler.milestones=[]", *common],
             out / "logs" / "warmup.log", env)
    timings["warm-up training"] = time.time() - t0

    # 4. video training
    video = out / "train"
    t0 = time.time()
    if not (video / "model_final.pth").is_file():
        _run([py, train_net, "--config-file", args.config_file, "--resume",
              f"train.output_dir={video}", f"train.max_iter={args.iters_video}",
              f"train.init_checkpoint={warm / 'model_final.pth'}",
              f"dataloader.train.mapper.num_frames={args.num_frames}",
              f"dataloader.train.mapper.sampling_frame_range={args.frame_range}", "train.eval_period=-1", *common],
             out / "logs" / "train.log", env)
    timings["video training"] = time.time() - t0

    # 5. eval
    evaluated = out / "eval"
    t0 = time.time()
    _run([py, train_net, "--config-file", args.config_file, "--eval-only",
          f"train.output_dir={evaluated}", f"train.init_checkpoint={video / 'model_final.pth'}", *common],
         out / "logs" / "eval.log", env)
    results["Local2Global tiny (trained)"] = read_metrics(evaluated) or {}
    timings["eval"] = time.time() - t0

    if args.task == "vps":
        t0 = time.time()
        rendered = _render_vps(args, out, data_root, evaluated)
        timings["render"] = time.time() - t0
        return _finish_vps(args, out, data_root, results, timings, t_all, rendered)

    # 6. render one held-out video
    t0 = time.time()
    valid = json.loads((data_root / "valid.json").read_text())
    videos = valid["videos"]
    pick = (next(v for v in videos if v["id"] == args.render_video) if args.render_video is not None
            else max(videos, key=lambda v: v["length"]))
    frames_dir = data_root / "valid" / "JPEGImages" / Path(pick["file_names"][0]).parent
    _run([py, str(ROOT / "scripts" / "demo.py"), "--config-file", args.config_file, "--input", str(frames_dir),
          "--output", str(out / "render"), "--video-id", str(pick["id"]),
          "--score-threshold", str(args.render_score_threshold), f"train.init_checkpoint={video / 'model_final.pth'}", *common], out / "logs" / "render.log", env)
    timings["render"] = time.time() - t0
    timings["total (without install)"] = time.time() - t_all

    table = _table(results)
    summary = ["# make demo: summary", "", f"Held-out synthetic videos: {len(videos)} "
               f"(dataset {data_root}).", "", table, "", "| stage | wall time (s) |", "|---|---:|"]
    summary += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    summary += ["", f"Rendered video {pick['id']} ({pick['length']} frames): `render/video.mp4`, `render/video.gif`, "
                "`render/frame_preview.png`, per-instance masks in `render/masks/`."]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n" + table)
    print(f"demo finished in {timings['total (without install)']:.0f} s; everything is under {out} (summary.md)")
    return 0


def _render_vps(args, out: Path, data_root: Path, evaluated: Path) -> str:
    """Draw one held-out video from the panoptic maps the evaluation wrote (``eval/inference/pred.json`` and
    ``pan_pred/``, the scored maps): ``render/video.mp4``, ``video.gif``, ``frame_preview.png``; returns its id."""
    import cv2  # noqa: E402

    from local2global.inference.demo import write_video  # noqa: E402
    from local2global.inference.panoptic_render import render_vps_prediction  # noqa: E402

    root = data_root / "VIPSeg_720P"
    categories = json.loads((root / "panoVIPSeg_categories.json").read_text())
    pick = None if args.render_video is None else f"val_{args.render_video:04d}"
    vid, frames = render_vps_prediction(str(evaluated / "inference" / "pred.json"),
                                        str(evaluated / "inference" / "pan_pred"), str(root / "images"),
                                        categories, video_id=pick)
    render = out / "render"
    render.mkdir(exist_ok=True)
    write_video(frames, render / "video.mp4", 6.0)
    write_video(frames, render / "video.gif", 6.0)
    cv2.imwrite(str(render / "frame_preview.png"), cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2BGR))
    logger.info("rendered video %s (%d frames) to %s", vid, len(frames), render)
    return vid


def _finish_vps(args, out: Path, data_root: Path, results: Dict[str, Dict[str, float]], timings: Dict[str, float],
                t_all: float, rendered: str) -> int:
    """The VPS demo's summary: ``summary.md`` (VPQ / STQ table, stage times), ``summary.json``, a final log line."""
    timings["total (without install)"] = time.time() - t_all
    valid = json.loads((data_root / "VIPSeg_720P" / "panoptic_gt_VIPSeg_val.json").read_text())
    num_videos = len(valid["videos"])
    num_frames = sum(len(v["images"]) for v in valid["videos"])
    table = _table(results, VPS_REPORTED)
    trained = results.get("Local2Global tiny (trained)", {})
    summary = ["# make demo-vps: summary", "", f"Held-out synthetic VPS videos: {num_videos} ({num_frames} frames; "
               f"dataset {data_root}), seed {args.seed}, {args.iters_image} warm-up + {args.iters_video} clip "
               "iterations.", "", table, "", "| stage | wall time (s) |", "|---|---:|"]
    summary += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    summary += ["", f"Rendered video {rendered} (the evaluated panoptic maps; things by track id, stuff by class): "
                "`render/video.mp4`, `render/video.gif`, `render/frame_preview.png`."]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    doc = {"task": "vps", "rendered_video": rendered, "seed": args.seed, "iters_image": args.iters_image, "iters_video": args.iters_video,
           "dataset": str(data_root), "num_videos": num_videos, "num_frames": num_frames, "results": results,
           "seconds": timings}
    (out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    for line in table.splitlines():
        logger.info("%s", line)
    logger.info("VPS demo finished in %.0f s: VPQ %.1f, STQ %.1f on %d held-out synthetic videos (seed %d); "
                "everything is under %s (summary.md)", timings["total (without install)"],
                trained.get("VPQ", float("nan")), trained.get("STQ", float("nan")), num_videos, args.seed, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

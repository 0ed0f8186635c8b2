"""Item 3: scaling with video length (peak memory, time per frame), number of queries and resolution.

Video length: each (model, length) runs in its **own process** (peak RSS is a lifetime figure): online
inference over a synthetic video whose frames are generated one at a time (the input never grows), with the
streaming post-processor storing every frame's RLEs (the video-level result is kept, as ``inference_video``
does), then ``finalize``. Reported: peak RSS (``VmHWM``) at the end, RSS after the first frame, the growth
between them, the median time per frame and the size of the stored RLEs.

Queries / resolution: the R-50 model at t > 0 (``process_frame`` with a state) with N = 100 / 300 at 360p and
N = 300 at 360p / 480p / 720p (16:9 frames), a few frames each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

from benchmarks.harness import headline, register, renderer

from ._common import ROOT, build_model, device, load_average, peak_rss_mb, run_subprocess, synthetic_frame

PLOTS = ROOT / "benchmarks" / "plots"
LENGTHS = {"tiny": [30, 100, 300, 1000, 2000], "r50": [30, 100, 300]}
QUICK_LENGTHS = {"tiny": [30, 100]}
NOSTORE_LENGTHS = {False: {"tiny": [30, 2000], "r50": [30, 300]}, True: {"tiny": [30, 100]}}
RESOLUTIONS = {"360p": (360, 640), "480p": (480, 854), "720p": (720, 1280)}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def child(model_name: str, length: int, height: int, width: int, store: bool = True) -> dict:
    """Online inference over ``length`` synthetic frames in this process; prints a JSON record.

    ``store=False`` is the live-stream mode (``process_frame(..., store=False)``: per-frame outputs only, no
    video-level result), which isolates what the stored RLEs cost.
    """
    torch.set_grad_enabled(False)
    model = build_model(model_name)
    pp = model.postprocessor
    pp.reset()
    size = (height, width)
    state = None
    times: List[float] = []
    rss_after_first = None
    rss_samples = []
    for i in range(length):
        frame = synthetic_frame(i, height, width).to(device())
        t0 = time.perf_counter()
        state, _ = model.process_frame(state, frame, size, store=store)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if i == 0:
            rss_after_first = _rss_mb()
        if i % max(1, length // 10) == 0:
            rss_samples.append([i, _rss_mb()])
    store_ = pp._state.rles  # FrameRLEStore: spilled to a temporary file (flat memory) unless spill_rles=False
    if store_ is None:
        rle_bytes = 0
    elif store_._file is not None:
        rle_bytes = store_._file.tell()
    else:
        rle_bytes = sum(len(r["counts"]) for fr in store_._frames for r in fr if r is not None)
    result = pp.finalize(0, size) if store else {"segmentations": []}
    out = {"model": model_name, "length": length, "resolution": [height, width], "store": store,
           "peak_rss_mb": peak_rss_mb(), "rss_after_first_frame_mb": rss_after_first, "rss_end_mb": _rss_mb(),
           "rss_samples": rss_samples, "median_frame_s": statistics.median(times[1:] or times),
           "first_frame_s": times[0], "total_s": sum(times), "rle_bytes": rle_bytes,
           "result_tracks": len(result["segmentations"])}
    if torch.cuda.is_available():
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


RUN_CACHE = ROOT / "benchmarks" / "cache" / "scaling-runs"


def measure_lengths(model_name: str, lengths: List[int], height: int = 180, width: int = 320,
                    store: bool = True, tag: str = "") -> List[dict]:
    """One child process per length. Each finished run is kept under ``benchmarks/cache/scaling-runs/`` (with
    its commit) so that an interrupted case resumes; ``L2G_BENCH_FRESH=1`` ignores those files."""
    from benchmarks.harness import git_commit

    out = []
    RUN_CACHE.mkdir(parents=True, exist_ok=True)
    for n in lengths:
        path = RUN_CACHE / (f"{model_name}-{n}-{height}x{width}-t{torch.get_num_threads()}"
                            + ("" if store else "-nostore") + tag + ".json")
        if path.exists() and not os.environ.get("L2G_BENCH_FRESH"):
            out.append(json.loads(path.read_text()))
            continue
        rec = run_subprocess(["-m", "benchmarks.cases.scaling", "--child", model_name, str(n), str(height), str(width)]
                             + ([] if store else ["--no-store"]), timeout=4 * 3600)
        rec["load_avg_after"] = load_average()
        rec["commit"] = git_commit()
        path.write_text(json.dumps(rec))
        out.append(rec)
    return out


def measure_queries_resolution(model_name: str, repeats: int) -> Dict:
    from .inference import measure_inference

    out = {}
    for n in (100, 300):
        r = measure_inference(360, 640, n, repeats=repeats, step_repeats=0, variants=("full",))
        out[f"N={n} 360p"] = r["end_to_end"]["full"]
    for name, (h, w) in RESOLUTIONS.items():
        if name == "360p":
            out[f"N=300 {name}"] = out["N=300 360p"]
            continue
        r = measure_inference(h, w, 300, repeats=repeats, step_repeats=0, variants=("full",))
        out[f"N=300 {name}"] = r["end_to_end"]["full"]
    return out


@register("scaling")
def case_scaling(quick: bool) -> dict:
    """Peak memory and time vs video length (own process per length; tiny and R-50 at 180×320); time vs N, resolution."""
    lengths = QUICK_LENGTHS if quick else LENGTHS
    res = {"lengths": {}}
    if not quick:
        qr = RUN_CACHE / f"queries-resolution-r50-t{torch.get_num_threads()}.json"
        if qr.exists() and not os.environ.get("L2G_BENCH_FRESH"):
            res["queries_resolution"] = json.loads(qr.read_text())
        else:
            res["queries_resolution"] = {"model": "r50", "repeats": 2, "times": measure_queries_resolution("r50", 2)}
            RUN_CACHE.mkdir(parents=True, exist_ok=True)
            qr.write_text(json.dumps(res["queries_resolution"]))
    tag = "-quick" if quick else ""
    for m, ls in lengths.items():
        res["lengths"][m] = measure_lengths(m, ls, tag=tag)
    # the same without storing the video-level RLEs (live-stream mode): isolates the cost of the stored outputs
    res["lengths_nostore"] = {m: measure_lengths(m, ls, store=False, tag=tag)
                              for m, ls in NOSTORE_LENGTHS[quick].items()}
    return res


def _plot(rec: dict) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    f = rec["figures"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for model, runs in f["lengths"].items():
        ls = [r["length"] for r in runs]
        axes[0].plot(ls, [r["peak_rss_mb"] for r in runs], "o-", label=f"{model} 180×320")
        axes[1].plot(ls, [1000 * r["median_frame_s"] for r in runs], "o-", label=f"{model} 180×320")
    for model, runs in f.get("lengths_nostore", {}).items():
        ls = [r["length"] for r in runs]
        axes[0].plot(ls, [r["peak_rss_mb"] for r in runs], "x--", label=f"{model}, no stored RLEs")
    axes[0].set(xscale="log", xlabel="video length (frames)", ylabel="peak RSS (MiB)", title="Peak memory vs length")
    axes[1].set(xscale="log", yscale="log", xlabel="video length (frames)", ylabel="median ms / frame",
                title="Time per frame vs length")
    for a in axes:
        a.grid(True, alpha=0.3)
        a.legend()
    fig.tight_layout()
    files = ["plots/scaling_length.png"]
    fig.savefig(ROOT / "benchmarks" / files[0], dpi=110)
    plt.close(fig)
    if "queries_resolution" in f:
        t = f["queries_resolution"]["times"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        axes[0].bar(["N=100", "N=300"], [t["N=100 360p"]["median_s"], t["N=300 360p"]["median_s"]])
        axes[0].set(ylabel="s / frame", title="R-50 360p: queries")
        names = list(RESOLUTIONS)
        axes[1].plot([RESOLUTIONS[n][0] * RESOLUTIONS[n][1] / 1e6 for n in names],
                     [t[f"N=300 {n}"]["median_s"] for n in names], "o-")
        for n in names:
            axes[1].annotate(n, (RESOLUTIONS[n][0] * RESOLUTIONS[n][1] / 1e6, t[f"N=300 {n}"]["median_s"]))
        axes[1].set(xlabel="megapixels", ylabel="s / frame", title="R-50 N=300: resolution")
        fig.tight_layout()
        files.append("plots/scaling_queries_resolution.png")
        fig.savefig(ROOT / "benchmarks" / files[-1], dpi=110)
        plt.close(fig)
    return files


@renderer("scaling")
def render_scaling(rec: dict) -> str:
    f = rec["figures"]
    lines = ["| model | frames | peak RSS MiB | RSS after frame 0 MiB | growth MiB | peak vs 30 frames | median ms / frame "
             "| RLE KiB stored |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, runs in f["lengths"].items():
        ref = runs[0]["peak_rss_mb"]
        for r in runs:
            lines.append(f"| {model} | {r['length']} | {r['peak_rss_mb']:.0f} | {r['rss_after_first_frame_mb']:.0f} | "
                         f"{r['peak_rss_mb'] - r['rss_after_first_frame_mb']:.0f} | "
                         f"{100 * (r['peak_rss_mb'] / ref - 1):+.1f}% | {1000 * r['median_frame_s']:.0f} | "
                         f"{r['rle_bytes'] / 1024:.0f} |")
    if f.get("lengths_nostore"):
        lines += ["", "Live-stream mode (`process_frame(..., store=False)`: per-frame outputs only, no video-level "
                  "RLEs kept), same protocol:", "",
                  "| model | frames | peak RSS MiB | RSS after frame 0 MiB | growth MiB | peak vs 30 frames | "
                  "median ms / frame |", "|---|---:|---:|---:|---:|---:|---:|"]
        for model, runs in f["lengths_nostore"].items():
            ref = runs[0]["peak_rss_mb"]
            for r in runs:
                lines.append(f"| {model} | {r['length']} | {r['peak_rss_mb']:.0f} | "
                             f"{r['rss_after_first_frame_mb']:.0f} | {r['peak_rss_mb'] - r['rss_after_first_frame_mb']:.0f}"
                             f" | {100 * (r['peak_rss_mb'] / ref - 1):+.1f}% | {1000 * r['median_frame_s']:.0f} |")
    lines.append("")
    lines.append("Target: peak memory flat with the video length (2000 frames within 10% of 30 frames, RLE outputs "
                 "included).")
    if "queries_resolution" in f:
        t = f["queries_resolution"]["times"]
        lines += ["", "| R-50, frame t > 0 | median s / frame | samples |", "|---|---:|---|"]
        for k, v in t.items():
            lines.append(f"| {k} | {v['median_s']:.2f} | {', '.join(f'{s:.2f}' for s in v['samples_s'])} |")
    try:
        for p in _plot(rec):
            lines.append(f"\n![{p}]({p})")
    except Exception as e:  # noqa: BLE001
        lines.append(f"(plot failed: {e!r})")
    return "\n".join(lines)


@headline("scaling")
def headline_scaling(rec: dict) -> str:
    parts = []
    for model, runs in rec["figures"]["lengths"].items():
        a, b = runs[0], runs[-1]
        parts.append(f"{model}: {a['length']} → {b['length']} frames peak RSS {a['peak_rss_mb']:.0f} → "
                     f"{b['peak_rss_mb']:.0f} MiB ({100 * (b['peak_rss_mb'] / a['peak_rss_mb'] - 1):+.1f}%)")
    return "Memory vs video length (180×320): " + "; ".join(parts) + "."


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "LENGTH", "H", "W"), required=True)
    parser.add_argument("--no-store", action="store_true", help="live-stream mode: keep no video-level RLEs")
    a = parser.parse_args()
    m, n, h, w = a.child
    print(json.dumps(child(m, int(n), int(h), int(w), store=not a.no_store)))

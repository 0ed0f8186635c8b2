"""Item 4: training cost — seconds per iteration and peak memory of one 4-frame clip step.

Each configuration runs in its own process (peak RSS is a lifetime figure): a synthetic 4-frame clip with 3
tracked instances (batch of 1 clip), the model's training forward (``Local2Global.forward_train``: encoder on
the 4 frames in one batch, the online loop, the video criterion), ``backward`` and an AdamW step. Reported:
the median s / iter after a warm-up iteration and the peak RSS (CUDA: peak allocated memory). Reduced
supervision on/off is the ``model.criterion.reduced_supervision`` override.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import List

import torch

from benchmarks.harness import headline, register, renderer

from ._common import build_model, device, load_average, peak_rss_mb, run_subprocess, synthetic_clip

FULL = [  # (model, height, width, reduced supervision, iterations incl. warm-up)
    ("r50", 360, 640, True, 3), ("r50", 360, 640, False, 3),
    ("tiny", 180, 320, True, 6), ("tiny", 180, 320, False, 6),
]
QUICK = [("tiny", 180, 320, True, 4), ("tiny", 180, 320, False, 4)]


def child(model_name: str, height: int, width: int, reduced: bool, iters: int, frames: int = 4) -> dict:
    overrides = [f"model.criterion.reduced_supervision={reduced}"]
    model = build_model(model_name, overrides, eval_mode=False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    clip = synthetic_clip(frames, height, width, model.num_classes)
    times: List[float] = []
    for _ in range(iters):
        t0 = time.perf_counter()
        losses = model([clip])
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out = {"model": model_name, "resolution": [height, width], "frames": frames, "reduced_supervision": reduced,
           "iters": iters, "samples_s": times, "median_s_per_iter": statistics.median(times[1:]),
           "peak_rss_mb": peak_rss_mb(), "num_losses": len(losses), "loss": float(loss.detach())}
    if torch.cuda.is_available():
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


@register("training")
def case_training(quick: bool) -> dict:
    """s / iter and peak memory of a 4-frame clip step: R-50 and tiny, reduced supervision on/off."""
    runs = []
    for model, h, w, rs, it in (QUICK if quick else FULL):
        rec = run_subprocess(["-m", "benchmarks.cases.training", "--child", model, str(h), str(w), str(int(rs)),
                              str(it)], timeout=3 * 3600)
        rec["load_avg_after"] = load_average()
        runs.append(rec)
    return {"runs": runs, "device": str(device())}


def interleaved_rs(model_name: str, height: int, width: int, pairs: int, frames: int = 4) -> dict:
    """Reduced supervision on/off in one process, alternating iterations (on, off, on, off, ...)."""
    from benchmarks.harness import interleaved_times

    model = build_model(model_name, eval_mode=False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    clip = synthetic_clip(frames, height, width, model.num_classes)

    def it(rs: bool):
        model.criterion.reduced_supervision = rs
        losses = model([clip])
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = interleaved_times({"on": lambda: it(True), "off": lambda: it(False)}, repeats=pairs, warmup=1)
    ratios = [b / a for a, b in zip(t["on"]["samples_s"], t["off"]["samples_s"])]
    return {"model": model_name, "resolution": [height, width], "frames": frames, "times": t,
            "ratio_off_on": statistics.median(ratios), "ratio_pairs": ratios}


@register("training-rs")
def case_training_rs(quick: bool) -> dict:
    """Reduced supervision on vs off, interleaved in one process (time ratio of a 4-frame clip step)."""
    runs = [interleaved_rs("tiny", 180, 320, pairs=4 if quick else 10)]
    if not quick:
        runs.append(interleaved_rs("r50", 180, 320, pairs=3))
    return {"runs": runs, "load_avg_after": load_average()}


@renderer("training-rs")
def render_training_rs(rec: dict) -> str:
    lines = ["| model | input | RS on s / iter | RS off s / iter | **off / on** (median of pairs) | pairs |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rec["figures"]["runs"]:
        t = r["times"]
        lines.append(f"| {r['model']} | {r['frames']}×{r['resolution'][0]}×{r['resolution'][1]} | "
                     f"{t['on']['median_s']:.2f} | {t['off']['median_s']:.2f} | **{r['ratio_off_on']:.3f}** | "
                     f"{len(r['ratio_pairs'])} |")
    lines.append("\nReduced supervision drops every loss of 1..T-2 random frames per clip (the forward and the "
                 "backward through the network still cover every frame), so it saves matching and loss work only.")
    return "\n".join(lines)


@renderer("training")
def render_training(rec: dict) -> str:
    runs = rec["figures"]["runs"]
    lines = ["| model | input | reduced supervision | s / iter (median) | samples (s) | peak RSS MiB | loss terms |",
             "|---|---|---|---:|---|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['model']} | {r['frames']}×{r['resolution'][0]}×{r['resolution'][1]} | "
                     f"{'on' if r['reduced_supervision'] else 'off'} | {r['median_s_per_iter']:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in r['samples_s'])} | {r['peak_rss_mb']:.0f} | {r['num_losses']} |")
    by = {(r["model"], r["reduced_supervision"]): r for r in runs}
    for m in ("r50", "tiny"):
        if (m, True) in by and (m, False) in by:
            on, off = by[(m, True)], by[(m, False)]
            lines.append(f"\n* {m}: reduced supervision off / on = "
                         f"{off['median_s_per_iter'] / on['median_s_per_iter']:.3f} in time, "
                         f"{off['peak_rss_mb'] / on['peak_rss_mb']:.3f} in peak RSS.")
    lines.append("\n(Separate processes, not interleaved: the on/off time ratio carries the machine's drift; the interleaved ratio is in `training-rs`.)")
    return "\n".join(lines)


@headline("training")
def headline_training(rec: dict) -> str:
    parts = [f"{r['model']} {r['resolution'][0]}p RS {'on' if r['reduced_supervision'] else 'off'}: "
             f"{r['median_s_per_iter']:.2f} s/iter, {r['peak_rss_mb'] / 1024:.1f} GiB"
             for r in rec["figures"]["runs"]]
    return "Training, one 4-frame clip: " + "; ".join(parts) + "."


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=5, metavar=("MODEL", "H", "W", "REDUCED", "ITERS"), required=True)
    a = parser.parse_args()
    m, h, w, rs, it = a.child
    print(json.dumps(child(m, int(h), int(w), bool(int(rs)), int(it))))

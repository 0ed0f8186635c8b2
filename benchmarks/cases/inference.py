"""Item 1: per-frame online inference time of the R-50 model — full vs baseline vs image mode.

One R-50 model (random weights, ``configs/models/local2global_r50.py``) is timed on synthetic 360×640 frames:

* ``full``      frame t > 0 of Local2Global: ``process_frame(state, frame)`` (aligner on, trajectory g_pos);
* ``baseline``  the same call with ``model.aligner = None`` (the ``model.aligner=null`` override: propagated
  queries go straight into the decoder, no token encoding / top-K selection at t > 0);
* ``image``     the segmenter alone: ``process_frame(None, frame)`` (MaskDINO image mode, frame 0).

The variants share weights and input and are interleaved (A, B, C, A, B, C, ...); every call includes the
pre-processing, the network and the streaming post-processing (mask upsampling, thresholding, RLE). Because the
encoder (backbone + pixel encoder) is identical in all three and dominates, the per-step cost is also timed
alone on fixed encoder features (``step()`` interleaved), which gives a less noisy overhead figure.
"""

from __future__ import annotations

import statistics
from typing import Dict

import torch

from benchmarks.harness import headline, interleaved_times, median_time, register, renderer

from ._common import build_model, device, load_average, synthetic_frame


def _variants(model, frames, state0, size):
    aligner = model.aligner

    def call(state, frame, use_aligner):
        model.tracker.aligner = aligner if use_aligner else None
        model.postprocessor.reset()
        model.process_frame(state, frame, size)
        model.tracker.aligner = aligner

    return {
        "full": lambda: call(state0, frames[1], True),
        "baseline": lambda: call(state0, frames[1], False),
        "image": lambda: call(None, frames[1], True),
    }


def measure_inference(height: int, width: int, num_queries: int, repeats: int, step_repeats: int,
                      variants=("full", "baseline", "image")) -> Dict:
    overrides = [] if num_queries == 300 else [f"model.num_queries={num_queries}"]
    model = build_model("r50", overrides)
    frames = [synthetic_frame(i, height, width).to(device()) for i in range(2)]
    size = (height, width)
    with torch.no_grad():
        state0, _ = model.process_frame(None, frames[0], size)
    fns = {k: v for k, v in _variants(model, frames, state0, size).items() if k in variants}
    load_before = load_average()
    with torch.no_grad():
        e2e = interleaved_times(fns, repeats=repeats, warmup=1)
    out = {"resolution": [height, width], "num_queries": num_queries, "repeats": repeats,
           "end_to_end": e2e, "load_avg_before": load_before, "load_avg_after": load_average()}
    if "full" in e2e and "baseline" in e2e:
        # per-pair ratios of the interleaved samples (drift between pairs cancels)
        pairs = [f / b for f, b in zip(e2e["full"]["samples_s"], e2e["baseline"]["samples_s"])]
        out["ratio_full_baseline"] = statistics.median(pairs)
        out["ratio_full_baseline_pairs"] = pairs
    if "image" in e2e and "baseline" in e2e:
        out["ratio_image_baseline"] = statistics.median(
            [i / b for i, b in zip(e2e["image"]["samples_s"], e2e["baseline"]["samples_s"])])
    if step_repeats:
        aligner = model.aligner
        with torch.no_grad():
            images = model.preprocess([frames[1]])
            enc_s = median_time(lambda: model.encode(images.tensor), repeats=max(2, step_repeats // 3), warmup=0)
            mask_features, multi_scale = model.encode(images.tensor)

            def step(use_aligner):
                model.tracker.aligner = aligner if use_aligner else None
                model.step(state0, multi_scale, mask_features)
                model.tracker.aligner = aligner

            steps = interleaved_times({"full": lambda: step(True), "baseline": lambda: step(False)},
                                      repeats=step_repeats, warmup=1)
        out["encode_s"] = enc_s
        out["step"] = steps
        f, b = steps["full"]["median_s"], steps["baseline"]["median_s"]
        out["step_overhead_s"] = f - b
        out["ratio_full_baseline_from_steps"] = (out["end_to_end"]["baseline"]["median_s"] + f - b) / \
            out["end_to_end"]["baseline"]["median_s"] if "baseline" in e2e else None
    return out


@register("inference")
def case_inference(quick: bool) -> dict:
    """R-50 (N=300) at 360×640: per-frame time of full Local2Global, baseline (no aligner), image mode; ratios."""
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 16)))
    return measure_inference(360, 640, 300, repeats=2 if quick else 5, step_repeats=0 if quick else 9)


@renderer("inference")
def render_inference(rec: dict) -> str:
    f = rec["figures"]
    e = f["end_to_end"]
    rows = ["| variant | median s / frame | samples (s) |", "|---|---:|---|"]
    for k in ("full", "baseline", "image"):
        if k in e:
            rows.append(f"| {k} | {e[k]['median_s']:.3f} | {', '.join(f'{s:.2f}' for s in e[k]['samples_s'])} |")
    lines = rows + [""]
    lines.append(f"* **full / baseline = {f['ratio_full_baseline']:.3f}** (median of the {len(f['ratio_full_baseline_pairs'])} "
                 f"interleaved pairs; target <= 1.05); image / baseline = {f['ratio_image_baseline']:.3f}.")
    if "step" in f:
        s = f["step"]
        lines.append(f"* Step alone on fixed encoder features (interleaved, {len(s['full']['samples_s'])} pairs): "
                     f"full {s['full']['median_s']:.3f} s, baseline {s['baseline']['median_s']:.3f} s, overhead "
                     f"{f['step_overhead_s']:.3f} s; encoder (backbone + pixel encoder) {f['encode_s']:.3f} s. "
                     f"Overhead added to the baseline frame time: full / baseline = "
                     f"{f['ratio_full_baseline_from_steps']:.3f}.")
    lines.append(f"* Load average before / after: {f['load_avg_before']} / {f['load_avg_after']}.")
    return "\n".join(lines)


@headline("inference")
def headline_inference(rec: dict) -> str:
    f = rec["figures"]
    e = f["end_to_end"]
    s = (f"R-50 360×640 per frame: full {e['full']['median_s']:.2f} s, baseline {e['baseline']['median_s']:.2f} s, "
         f"image mode {e['image']['median_s']:.2f} s; **full / baseline = {f['ratio_full_baseline']:.3f}** "
         "(interleaved; target <= 1.05)")
    if f.get("ratio_full_baseline_from_steps"):
        s += f", {f['ratio_full_baseline_from_steps']:.3f} from the step-only overhead"
    return s + "."

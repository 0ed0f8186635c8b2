"""Item 5: the YouTube-VIS evaluator against the straightforward official per-pair loop (300 videos).

:func:`local2global.evaluation.ytvis_reference.benchmark_against_reference` builds a random prediction set that
mimics a trained model's output (720p, 10-36 frames, 100 predictions per video, most near a ground-truth
object, compressed RLE), writes gt and results JSON once, and times ``evaluate_ytvis`` (batched IoU,
vectorised matching) and ``evaluate_ytvis_reference`` (the official cocoapi-style per-pair loop) end to end
on the same files, plus the IoU stage alone; ``max |diff|`` is the largest difference of the 12 summary
numbers (AP, AP50, AP75, APs/m/l, AR1, AR10, ...). Also available as ``python benchmarks/bench_eval.py``.
"""

from __future__ import annotations

from benchmarks.harness import headline, register, renderer


@register("eval")
def case_eval(quick: bool) -> dict:
    """YouTube-VIS evaluator vs the official per-pair loop on 300 videos × 100 predictions: ratio and equality."""
    from local2global.evaluation.ytvis_reference import benchmark_against_reference

    videos = 100 if quick else 300
    out = {}
    for preset in (["ytvis"] if quick else ["ytvis", "crowded"]):
        r = benchmark_against_reference(preset=preset, num_videos=videos, preds_per_video=100, seed=0)
        out[preset] = {"videos": videos, **{k: v for k, v in r.items() if k != "stats"},
                       "AP": float(r["stats"]["AP"])}
    return out


@renderer("eval")
def render_eval(rec: dict) -> str:
    lines = ["| preset | videos | predictions | same-category pairs | evaluator s | reference loop s | speed-up | "
             "IoU stage s (fast / ref) | IoU speed-up | max abs diff of the 12 summary numbers | AP |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for preset, r in rec["figures"].items():
        lines.append(f"| {preset} | {r['videos']} | {r['num_predictions']} | {r['pairs']} | {r['fast_s']:.2f} | "
                     f"{r['reference_s']:.2f} | **{r['ratio']:.1f}×** | {r['iou_fast_s']:.2f} / "
                     f"{r['iou_reference_s']:.2f} | {r['iou_ratio']:.1f}× | {r['max_abs_diff']:.2g} | "
                     f"{100 * r['AP']:.2f} |")
    lines.append("\n(`speed-up` = reference time / evaluator time; presets: `ytvis` = 1-5 objects of 40 categories "
                 "per video, `crowded` = 4-10 objects of 2 categories per video.)")
    return "\n".join(lines)


@headline("eval")
def headline_eval(rec: dict) -> str:
    r = rec["figures"]["ytvis"]
    return (f"YouTube-VIS evaluator: {r['ratio']:.1f}× faster than the official per-pair loop on {r['videos']} videos, "
            f"summary numbers equal to {r['max_abs_diff']:.1g}.")

"""Benchmark: fast YouTube-VIS evaluation vs. the straightforward official per-pair loop.

Usage::

    python benchmarks/bench_eval.py                      # 300 videos x 100 predictions, both presets
    python benchmarks/bench_eval.py --videos 30 --preset ytvis

Prints, per preset, the end-to-end times of ``evaluate_ytvis`` and of ``evaluate_ytvis_reference`` (both read
the same JSON files), the IoU-stage times (all same-category pairs), the ratios and the largest difference of
the 12 summary numbers (must be 0 up to float rounding).
"""

import argparse
import logging

from tabulate import tabulate

from local2global.evaluation.ytvis_reference import BENCHMARK_PRESETS, benchmark_against_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--preds-per-video", type=int, default=100)
    parser.add_argument("--preset", choices=sorted(BENCHMARK_PRESETS) + ["all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    presets = sorted(BENCHMARK_PRESETS) if args.preset == "all" else [args.preset]
    rows = []
    for preset in presets:
        r = benchmark_against_reference(preset=preset, num_videos=args.videos, preds_per_video=args.preds_per_video,
                                         seed=args.seed)
        rows.append([preset, args.videos, r["num_predictions"], r["pairs"], r["fast_s"], r["reference_s"], r["ratio"],
                     r["iou_fast_s"], r["iou_reference_s"], r["iou_ratio"], r["max_abs_diff"], 100 * r["stats"]["AP"]])
    print(tabulate(rows, headers=["preset", "videos", "predictions", "same-cat pairs", "fast s", "reference s",
                                  "ratio", "IoU fast s", "IoU ref s", "IoU ratio", "max |diff|", "AP"],
                   floatfmt=".3g", tablefmt="pipe"))


if __name__ == "__main__":
    main()

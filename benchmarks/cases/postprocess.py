"""Issue 19: video post-processing before / after finishing only the kept slots (N = 300, top-10).

Before (``VideoPostprocessor(deferred=False)``): every frame, all N slots are upsampled to the output resolution,
thresholded and RLE-encoded, and the RLEs are spilled to a temporary file. After (the default, ``deferred=True``):
every frame stores the stride-4 logits of the slots that can have a non-empty mask (one host copy, spilled), and
``finalize`` upsamples / encodes the top-k slots only. The cost per frame is amortised over the video:
``(sum of update times + finalize time) / T``. Both give the same result (checked here on every input).

Inputs: the shapes of the R-50 YouTube-VIS model at a 360×640 input (padded 384×640, stride-4 mask logits 96×160,
N = 300 slots, C = 40 classes, top-k 10), for two output sizes (360×640 as the ``breakdown`` case, and 720×1280,
the usual original YouTube-VIS size the evaluation needs) and two kinds of mask logits: ``noisy`` (standard normal:
what an untrained model gives, every slot non-empty, long RLEs) and ``blobs`` (one smooth bump per slot, half of
the slots all-negative, closer to a trained model). One CPU thread unless ``--threads`` says otherwise.

    python -m benchmarks.cases.postprocess [--quick]
"""

from __future__ import annotations

import json
import time
from typing import Dict, List

import torch

from benchmarks.harness import headline, register, renderer

NUM_SLOTS, NUM_CLASSES, TOPK = 300, 40, 10
PADDED, IMAGE, GRID = (384, 640), (360, 640), (96, 160)
OUTPUTS = ((360, 640), (720, 1280))


def _frames(kind: str, num_frames: int, seed: int = 0) -> List:
    gen = torch.Generator().manual_seed(seed)
    frames = []
    ys = torch.arange(GRID[0], dtype=torch.float32)[:, None]
    xs = torch.arange(GRID[1], dtype=torch.float32)[None, :]
    for _ in range(num_frames):
        logits = torch.randn(NUM_SLOTS, NUM_CLASSES, generator=gen) * 2 - 3
        if kind == "noisy":
            masks = torch.randn(NUM_SLOTS, *GRID, generator=gen)
        else:
            cy = torch.rand(NUM_SLOTS, 1, 1, generator=gen) * GRID[0]
            cx = torch.rand(NUM_SLOTS, 1, 1, generator=gen) * GRID[1]
            radius = 3 + torch.rand(NUM_SLOTS, 1, 1, generator=gen) * 15
            masks = 4 * (1 - ((ys - cy) ** 2 + (xs - cx) ** 2) / radius ** 2)
            empty = torch.rand(NUM_SLOTS, generator=gen) < 0.5
            masks[empty] = -masks[empty].abs() - 1
        frames.append((logits, masks))
    return frames


def _run(frames, output, deferred: bool) -> Dict:
    from local2global.modeling.postprocessing.video_instances import VideoPostprocessor

    pp = VideoPostprocessor(test_topk=TOPK, deferred=deferred)
    updates = []
    for logits, masks in frames:
        tic = time.perf_counter()
        pp.update(logits, masks, PADDED, IMAGE, output)
        updates.append(time.perf_counter() - tic)
    tic = time.perf_counter()
    result = pp.finalize(1, output)
    final = time.perf_counter() - tic
    return {"update_s": sum(updates), "finalize_s": final, "per_frame_s": (sum(updates) + final) / len(frames),
            "result": result}


def measure(quick: bool) -> Dict:
    num_frames = 4 if quick else 20
    rows = []
    for kind in ("noisy", "blobs"):
        frames = _frames(kind, num_frames)
        for output in OUTPUTS:
            before = _run(frames, output, deferred=False)
            after = _run(frames, output, deferred=True)
            rows.append({"masks": kind, "output": list(output), "frames": num_frames, "same_result":
                         before.pop("result") == after.pop("result"), "before": before, "after": after})
    return {"num_slots": NUM_SLOTS, "num_classes": NUM_CLASSES, "topk": TOPK, "threads": torch.get_num_threads(),
            "rows": rows}


@register("postprocess")
def case_postprocess(quick: bool) -> dict:
    """Post-processing per frame (amortised over the video), every slot finished (before) vs the top-k only."""
    return measure(quick)


@renderer("postprocess")
def render_postprocess(rec: dict) -> str:
    f = rec["figures"]
    lines = ["| mask logits | output | frames | before: s / frame | after: update s / frame | after: finalize s | "
             "after: s / frame | speed-up | same result |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in f["rows"]:
        b, a = r["before"], r["after"]
        lines.append(f"| {r['masks']} | {r['output'][0]}×{r['output'][1]} | {r['frames']} | {b['per_frame_s']:.3f} | "
                     f"{a['update_s'] / r['frames']:.3f} | {a['finalize_s']:.3f} | {a['per_frame_s']:.3f} | "
                     f"{b['per_frame_s'] / a['per_frame_s']:.1f}× | {'yes' if r['same_result'] else '**no**'} |")
    return "\n".join(lines)


@headline("postprocess")
def headline_postprocess(rec: dict) -> str:
    r = rec["figures"]["rows"][0]
    return (f"Post-processing (N = 300, top-10, {r['output'][0]}×{r['output'][1]}, {r['masks']} masks): "
            f"{r['before']['per_frame_s']:.3f} → **{r['after']['per_frame_s']:.3f} s / frame**, same result.")


if __name__ == "__main__":  # pragma: no cover - manual run
    import argparse
    import logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)
    figures = measure(args.quick)
    print(json.dumps(figures, indent=1))
    print(render_postprocess({"figures": figures}))

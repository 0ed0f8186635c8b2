"""Item 3 follow-up: the per-frame RLE store before/after spilling it to disk (N = 300 slots).

The video-level result needs every slot's RLE of every frame until the video ends (the final top-k slots are
only known then), which made peak memory grow linearly with the video length at N = 300 (the ``scaling``
finding). :class:`local2global.modeling.postprocessing.video_instances.FrameRLEStore` now appends each frame to a temporary file
and reads back only the selected slots. This case measures peak RSS of whole-video inference
(``Local2Global.inference_video``, RLE outputs included) with the tiny model at N = 300 queries, 180×320, for
two video lengths, with the store in memory (``spill_rles=False``, the old behaviour) and spilled (default),
each length in its own process (peak RSS is a lifetime figure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import headline, register, renderer

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, resource, sys, time, torch
from detectron2.config import LazyConfig, instantiate
n, nq, spill, h, w = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
cfg = LazyConfig.load(sys.argv[6])
cfg.model.num_queries = nq
cfg.model.postprocessor.spill_rles = spill
torch.manual_seed(0)
model = instantiate(cfg.model).eval()
g = torch.Generator().manual_seed(0)
frames = ((torch.rand(3, h, w, generator=g) * 255).to(torch.uint8) for _ in range(n))
t = time.perf_counter()
with torch.no_grad():
    out = model.inference_video({"video_id": 1, "height": h, "width": w, "length": n, "frames": frames})
print(json.dumps({"length": n, "spill": spill, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "s_per_frame": (time.perf_counter() - t) / n, "tracks": len(out["segmentations"])}))
"""


@register("rle-spill")
def case_rle_spill(quick: bool) -> dict:
    """Peak RSS of whole-video inference at N = 300 with the RLE store in memory vs spilled to disk."""
    lengths = [50, 200] if quick else [50, 500]
    cfg = str(ROOT / "configs" / "models" / "local2global_tiny.py")
    runs = []
    for spill in (False, True):
        for n in lengths:
            proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), "300", "1" if spill else "0", "180", "320", cfg],
                                  cwd=ROOT, capture_output=True, text=True, env=dict(os.environ), check=True)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"model": "tiny (N=300)", "resolution": [180, 320], "runs": runs}


def _growth(runs, spill):
    rs = sorted((r for r in runs if r["spill"] == spill), key=lambda r: r["length"])
    return rs[0], rs[-1], 100 * (rs[-1]["peak_rss_mb"] / rs[0]["peak_rss_mb"] - 1)


@renderer("rle-spill")
def render_rle_spill(rec: dict) -> str:
    f = rec["figures"]
    lines = ["| RLE store | frames | peak RSS (MiB) | s / frame |", "|---|---:|---:|---:|"]
    for r in f["runs"]:
        lines.append(f"| {'spilled to a temp file' if r['spill'] else 'in memory (before)'} | {r['length']} | "
                     f"{r['peak_rss_mb']:.0f} | {r['s_per_frame']:.3f} |")
    for spill in (False, True):
        a, b, g = _growth(f["runs"], spill)
        lines.append(f"\n{'After' if spill else 'Before'} (`spill_rles={spill}`): {a['length']} → {b['length']} frames "
                     f"peak RSS {a['peak_rss_mb']:.0f} → {b['peak_rss_mb']:.0f} MiB ({g:+.1f}%).")
    return "\n".join(lines)


@headline("rle-spill")
def headline_rle_spill(rec: dict) -> str:
    a0, b0, g0 = _growth(rec["figures"]["runs"], False)
    a1, b1, g1 = _growth(rec["figures"]["runs"], True)
    return (f"RLE store at N = 300 (tiny, 180×320, {a0['length']} → {b0['length']} frames): peak RSS {g0:+.1f}% in memory "
            f"(before) vs **{g1:+.1f}% spilled to disk** (after, the default).")

"""What each tracker costs on the shared R-50 segmenter: parameters, MACs and time of the tracker module alone.

Every tracker of ``local2global.modeling.trackers`` is put on the same R-50 MaskDINO model (N = 300, random
weights; ``configs/models/local2global_r50.py`` with ``model.tracker`` swapped; the trackers that have a recipe under
``configs/trackers/`` take its ``model.tracker`` node) and run on a 360×640 frame t = 1 after frame 0:

* ``tracker s``: the tracker's own calls of that frame (``decoder_input`` + ``update``, replayed on the recorded
  inputs; median of several runs) — for Local2Global the g_pos embedding and the aligner layers, for MinVIS the
  similarity and the Hungarian matching, for DVIS the referring tracker, for InsPro the intra-query attention;
* ``frame s``: the whole frame (``process_frame``: backbone, pixel encoder, token head, decoder, tracker,
  post-processing); ``segmenter s`` = frame − tracker;
* ``tracker GMACs``: multiply-adds of the replayed tracker calls, counted at the dispatcher with torch's FLOP
  formulas (``torch.utils.flop_counter``: matmuls, convolutions, attention; one multiply-add = 2 of its
  FLOPs; element-wise operators and scipy's host-side Hungarian matching are not counted); ``segmenter GMACs``: the
  same count of backbone + pixel encoder + token head + decoder of an image-mode frame, with bilinear
  ``grid_sample`` (the deformable attention's sampling) added at 4 multiply-adds per sampled value; post-processing
  is not counted;
* parameters: the tracker's own (for Local2Global the aligner layers, the paper's 3.2M) and all its parameters.

DVIS's Table 9 gives, for its R-50 online tracker on a 1080Ti: 9.68M parameters, 1.68 of 103.73 GMACs and 7.63 vs
48.10 ms per frame (tracker vs segmenter) — the reference for the ratio columns.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from benchmarks.harness import headline, median_time, register, renderer

from ._common import R50, ROOT, device, load_average, synthetic_frame

logger = logging.getLogger(__name__)

#: (row name, recipe whose ``model.tracker`` node is used, extra overrides of the R-50 model config)
TRACKERS: List[Tuple[str, Optional[str], List[str]]] = [
    ("Local2Global (aligner + trajectory)", None, []),
    ("propagation only (static anchors)", None, ["model.tracker.aligner=null", "model.tracker.global_pos=static"]),
    ("propagation only (refined boxes)", None, ["model.tracker.aligner=null", "model.tracker.global_pos=refined"]),
    ("MinVIS (embedding Hungarian)", "configs/trackers/minvis_tiny_synthetic.py", []),
    ("DVIS referring tracker", "configs/trackers/dvis_r50_ytvis19.py", []),
    ("InsPro-style propagation", "configs/trackers/inspro_r50_ytvis19.py", []),
]


def build_with_tracker(recipe: Optional[str], overrides: List[str]):
    """The R-50 model with the tracker of ``recipe`` (``None``: the model file's own), random weights."""
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(R50))
    if recipe is not None:
        src = LazyConfig.load(str(ROOT / recipe))
        cfg.model.tracker = src.model.tracker
        cfg.train = src.train  # the tracker node may read train.* (DVIS: the guided-matching switch point)
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model).to(device()).eval()


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class MacCounter:
    """Counts multiply-adds at the dispatcher (torch's FLOP formulas for matmuls, convolutions and attention).

    torch's ``FlopCounterMode`` cannot be used directly: its module tracker fails under ``no_grad`` on modules whose
    inputs are views of parameters. This is its formula table in a plain dispatch mode, plus bilinear
    ``grid_sample`` (4 multiply-adds per sampled value: the deformable attention's sampling) and the CPU kernel of
    ``scaled_dot_product_attention`` (Q·Kᵀ and P·V), which the table lacks.
    """

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry, shape_wrapper

        registry = dict(flop_registry)
        registry[torch.ops.aten.grid_sampler_2d] = shape_wrapper(
            lambda *a, out_shape=None, **k: 8 * _numel(out_shape))

        def sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs):
            b, h, lq, e = query
            return 2 * b * h * lq * key[-2] * (e + value[-1])

        registry[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = shape_wrapper(sdpa_cpu)
        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = registry.get(func._overloadpacket)
                if formula is not None:
                    counter.flops += formula(*args, **kwargs, out_val=out)
                return out

        self.flops = 0
        self._mode = _Mode()

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def count_macs(fn) -> float:
    """Multiply-adds of ``fn()``."""
    with MacCounter() as counter:
        fn()
    return counter.flops / 2.0


def segmenter_macs(model, frame: torch.Tensor) -> float:
    """Multiply-adds of an image-mode frame of ``model`` (backbone, pixel encoder, token head, decoder)."""

    def run():
        images = model.preprocess([frame])
        mf, ms = model.encode(images.tensor)
        model.step(None, ms, mf)

    with torch.no_grad():
        return count_macs(run)


class _Replay(nn.Module):
    """The tracker's calls of one frame on recorded inputs (for timing and fvcore)."""

    def __init__(self, tracker, state, ctx):
        super().__init__()
        self.tracker, self.state, self.ctx, self.decoded = tracker, state, ctx, None

    def forward(self):
        queries = self.tracker.decoder_input(self.state, self.ctx)
        _, out = self.tracker.update(self.state, self.ctx, queries, self.decoded)
        return out["pred_logits"], out["pred_masks"]


def _record_frame(model, state, frame, size):
    """Run ``process_frame`` once, recording the tracker's inputs (state, FrameContext, decoder output)."""
    tracker = model.tracker
    rec: Dict = {}
    orig_in, orig_up = tracker.decoder_input, tracker.update

    def decoder_input(st, ctx):
        rec["ctx"] = ctx
        return orig_in(st, ctx)

    def update(st, ctx, queries, decoded):
        rec["decoded"] = decoded
        return orig_up(st, ctx, queries, decoded)

    tracker.decoder_input, tracker.update = decoder_input, update
    try:
        new_state, _ = model.process_frame(state, frame, size)
    finally:
        del tracker.decoder_input, tracker.update  # back to the class methods
    return new_state, rec


def measure_tracker(name: str, recipe: Optional[str], overrides: List[str], h: int, w: int, repeats: int) -> dict:
    if recipe is not None and not os.path.isfile(ROOT / recipe):
        return {"name": name, "skipped": f"{recipe} does not exist"}
    model = build_with_tracker(recipe, overrides)
    size = (h, w)
    f0, f1 = synthetic_frame(0, h, w).to(device()), synthetic_frame(1, h, w).to(device())
    with torch.no_grad():
        state0, _ = model.process_frame(None, f0, size)
        _, rec = _record_frame(model, state0, f1, size)
        replay = _Replay(model.tracker, state0, rec["ctx"])
        replay.decoded = rec["decoded"]
        t_tracker = median_time(replay, max(5, repeats), warmup=1)
        model.postprocessor.reset()
        t_frame = median_time(lambda: model.process_frame(state0, f1, size), repeats, warmup=0)
        macs = count_macs(replay)
    tracker_params = sum(p.numel() for p in model.tracker.parameters())
    return {"name": name, "recipe": recipe, "overrides": overrides, "tracker": type(model.tracker).__name__,
            "family": model.tracker.family, "frozen_segmenter": not model.tracker.trains_segmenter,
            "own_params": model.tracker.extra_parameter_count(), "tracker_params": tracker_params,
            "total_params": sum(p.numel() for p in model.parameters()), "tracker_s": t_tracker, "frame_s": t_frame,
            "tracker_macs": macs}


@register("trackers")
def case_trackers(quick: bool) -> dict:
    """Each tracker on the shared R-50 segmenter (N=300, 360×640): parameters, MACs, tracker time vs segmenter."""
    h, w = (180, 320) if quick else (360, 640)
    repeats = 1 if quick else 3
    load_before = load_average()
    rows = [measure_tracker(name, recipe, ov, h, w, repeats) for name, recipe, ov in TRACKERS]
    seg_model = build_with_tracker(None, ["model.tracker.aligner=null"])
    seg_macs = segmenter_macs(seg_model, synthetic_frame(0, h, w).to(device()))
    return {"resolution": [h, w], "num_queries": 300, "repeats": repeats, "rows": rows,
            "segmenter_macs": seg_macs, "threads": torch.get_num_threads(),
            "device": str(device()), "load_avg_before": load_before, "load_avg_after": load_average()}


def _fmt_params(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n:,}" if n < 100_000 else f"{n / 1e6:.2f}M"


@renderer("trackers")
def render_trackers(rec: dict) -> str:
    f = rec["figures"]
    seg_g = f["segmenter_macs"] / 1e9
    lines = [f"R-50 segmenter, N = {f['num_queries']}, {f['resolution'][0]}×{f['resolution'][1]}, "
             f"{f['device']}, {f['threads']} thread(s); segmenter (image-mode frame, without post-processing) "
             f"**{seg_g:.1f} GMACs**.", "",
             "| tracker | family | segmenter | own params | all tracker params | tracker GMACs | % of segmenter MACs | "
             "tracker s | frame s | tracker / segmenter time |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in f["rows"]:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | - | - | - | - | - | - | - | - | not measured: {r['skipped']} |")
            continue
        macs = r["tracker_macs"]
        g = "-" if macs is None else f"{macs / 1e9:.3f}"
        share = "-" if macs is None else f"{100 * macs / f['segmenter_macs']:.2f}%"
        seg_t = r["frame_s"] - r["tracker_s"]
        lines.append(f"| {r['name']} | {r['family']} | {'frozen' if r['frozen_segmenter'] else 'trained'} | "
                     f"{_fmt_params(r['own_params'])} | {_fmt_params(r['tracker_params'])} | {g} | {share} | "
                     f"{r['tracker_s']:.3f} | {r['frame_s']:.2f} | {r['tracker_s'] / max(seg_t, 1e-9):.3f} |")
    lines += ["", "* DVIS's Table 9 (R-50, 1080Ti): tracker 9.68M parameters, 1.68 of 103.73 GMACs (1.6%), "
              "7.63 vs 48.10 ms per frame (0.159).",
              "* \"own params\": what the tracker adds and the papers count (Local2Global: the aligner layers, "
              "without the static l_pos table; InsPro / DVIS: their modules); \"all tracker params\" includes "
              "such tables.",
              "* Times are CPU medians on a shared machine; the ratio column is the robust figure. MinVIS's time "
              "is the cosine similarity plus scipy's Hungarian matching on the host."]
    lines.append(f"* Load average before / after: {f['load_avg_before']} / {f['load_avg_after']}.")
    return "\n".join(lines)


@headline("trackers")
def headline_trackers(rec: dict) -> str:
    f = rec["figures"]
    parts = []
    for r in f["rows"]:
        if r.get("skipped"):
            continue
        seg_t = r["frame_s"] - r["tracker_s"]
        parts.append(f"{r['name'].split(' (')[0]} {_fmt_params(r['own_params'])} / "
                     f"{r['tracker_s'] / max(seg_t, 1e-9):.3f}")
    return ("Trackers on the R-50 segmenter (own params / tracker÷segmenter time, "
            f"{f['resolution'][0]}×{f['resolution'][1]}): " + "; ".join(parts) + ".")

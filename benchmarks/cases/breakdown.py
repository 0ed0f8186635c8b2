"""Item 2: where a frame's time goes (R-50, N=300, 360×640, frame t > 0 of the full model), and its FLOPs.

Parts, timed separately on the same frame (median of several runs after a warm-up):

* ``backbone``        ResNet-50 (``model.backbone``);
* ``pixel encoder``   MaskDINOEncoder: 6 deformable-attention layers + extra level + FPN mask features;
* ``query selection`` decoder memory flattening + two-stage token head + top-K selection;
* ``aligner``         L2G-aligner (g_pos embedding + 3 layers);
* ``decoder``         9 deformable decoder layers + heads on every stage + Mask2Box of the final masks;
* ``post-processing`` the streaming post-processor: mask upsampling to 360×640, thresholding, RLE.

FLOPs per part are fvcore's ``FlopCountAnalysis`` totals (fvcore counts one fused multiply-add as one flop,
so FLOPs = 2 × fvcore's count), with two handles added here: ``scaled_dot_product_attention`` (Q·Kᵀ and P·V)
and bilinear ``grid_sample`` (4 multiply-adds per sampled value, the deformable attention). Element-wise
operators are not counted (fvcore's convention); other unknown operators are listed. The achieved FLOP/s of each part is set against this machine's dense
float32 matmul FLOP/s (``torch.mm`` of 2048×2048 matrices with the same thread count: the practical ceiling).
"""

from __future__ import annotations

import logging
import time
from typing import Dict

import torch
from torch import nn

from benchmarks.harness import median_time, register, renderer, headline

from ._common import build_model, device, load_average, synthetic_frame

logger = logging.getLogger(__name__)

PARTS = ["backbone", "pixel encoder", "query selection", "aligner", "decoder", "post-processing"]


def matmul_flops(sizes=(512, 1024, 2048), repeats: int = 5) -> Dict[str, float]:
    """Dense float32 square matmul FLOP/s per size: best over sizes and runs (the ceiling), and the median."""
    per_size = {}
    best, medians = 0.0, []
    for n in sizes:
        a = torch.randn(n, n, device=device())
        b = torch.randn(n, n, device=device())
        torch.mm(a, b)
        times = sorted(median_time(lambda: torch.mm(a, b), repeats=1, warmup=0) for _ in range(repeats))
        per_size[str(n)] = 2.0 * n ** 3 / times[0]
        best = max(best, per_size[str(n)])
        medians.append(2.0 * n ** 3 / times[len(times) // 2])
    return {"best": best, "median": sorted(medians)[len(medians) // 2], "best_per_size": per_size}


class _Backbone(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, x):
        f = self.m.backbone(x)
        return tuple(f[k] for k in ("res2", "res3", "res4", "res5"))


class _PixelEncoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, res2, res3, res4, res5):
        mf, ms = self.m.pixel_decoder.forward_features({"res2": res2, "res3": res3, "res4": res4, "res5": res5})
        return (mf, *ms)


class _QuerySelection(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, *ms):
        dec = self.m.decoder
        bundle = dec.prepare_memory(list(ms))
        om, lg, co = dec.encode_tokens(bundle)
        sel = self.m.query_selector(om, lg, co)
        return sel.queries, sel.coords_unsig


class _Aligner(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, q_global, q_local, boxes):
        g_pos = self.m.decoder.query_pos(boxes)
        return self.m.aligner(q_global, q_local, g_pos, None)


class _Decoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, tgt, ref_unsig, mask_features, *ms):
        dec = self.m.decoder
        bundle = dec.prepare_memory(list(ms))
        out = dec.decode(tgt, ref_unsig, bundle, mask_features)
        return out.pred_logits[-1], out.pred_masks[-1], out.hs_prenorm_last


# Element-wise / bookkeeping operators: fvcore does not count them; they are left out of the "uncounted" list.
_ELEMENTWISE = {"add", "add_", "sub", "rsub", "mul", "div", "pow", "sin", "cos", "sigmoid", "log", "exp", "sum",
                "cumsum", "linspace", "meshgrid", "resolve_conj", "resolve_neg", "lt", "gt", "all", "any", "__or__",
                "__and__", "addcmul", "softmax", "max_pool2d", "relu", "clamp", "neg", "abs", "sqrt", "rsqrt",
                "mean", "max", "min", "where", "ne", "eq", "ge", "le", "floor", "ceil", "round"}


def _sdpa_flop(inputs, outputs):
    """fvcore handle: scaled_dot_product_attention = Q·Kᵀ and P·V multiply-adds."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _grid_sample_flop(inputs, outputs):
    """fvcore handle: bilinear grid_sample = 4 multiply-adds per output element (the 4 taps)."""
    from fvcore.nn.jit_handles import get_shape

    n = 1
    for d in get_shape(outputs[0]):
        n *= d
    return 4 * n


def _flops(module: nn.Module, inputs) -> Dict:
    from fvcore.nn import FlopCountAnalysis

    try:
        fca = FlopCountAnalysis(module, inputs).set_op_handle(
            "aten::scaled_dot_product_attention", _sdpa_flop, "aten::grid_sampler", _grid_sample_flop)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        total = fca.total()
        unc = {k: v for k, v in fca.unsupported_ops().items() if k.split("::")[-1] not in _ELEMENTWISE}
        return {"flops": 2.0 * total, "uncounted_ops": unc}
    except Exception as e:  # noqa: BLE001 - tracing can fail on data-dependent code; count another way
        logger.warning("fvcore failed on %s (%s); counting with torch's FlopCounterMode instead",
                       type(module).__name__, repr(e)[:120])
        return _flops_dispatch(module, inputs)


def _grid_sample_dispatch_flop(input_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode formula for bilinear grid_sample: 4 multiply-adds (8 FLOPs) per output element."""
    n = 1
    for d in out_shape:
        n *= d
    return 8 * n


def _flops_dispatch(module: nn.Module, inputs) -> Dict:
    """FLOPs by torch's dispatcher-level counter (no JIT trace, so Python-side shapes and data-dependent code are
    fine): matmuls, convolutions and attention as torch counts them (2 per multiply-add), plus grid_sample.
    Operators it has no formula for are not listed (torch does not report them)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.aten.grid_sampler_2d: _grid_sample_dispatch_flop})
    with counter:
        module(*inputs)
    return {"flops": float(counter.get_total_flops()), "uncounted_ops": {}, "counter": "torch FlopCounterMode"}


#: Tensor methods that copy device data to the host (a host sync on a GPU), counted by :func:`count_host_syncs`.
HOST_SYNC_METHODS = ("tolist", "item", "cpu", "numpy")


def count_host_syncs(fn) -> Dict[str, int]:
    """Calls of the :data:`HOST_SYNC_METHODS` of ``torch.Tensor`` made while ``fn()`` runs (Python-level calls;
    implicit syncs such as ``bool(tensor)`` on a GPU are not seen)."""
    counts = {name: 0 for name in HOST_SYNC_METHODS}
    originals = {name: getattr(torch.Tensor, name) for name in HOST_SYNC_METHODS}

    def wrap(name):
        original = originals[name]

        def counted(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    try:
        for name in HOST_SYNC_METHODS:
            setattr(torch.Tensor, name, wrap(name))
        fn()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return counts


@register("breakdown")
def case_breakdown(quick: bool) -> dict:
    """Per-part time split and fvcore FLOPs of one R-50 frame (t > 0), vs this machine's matmul FLOP/s."""

    return measure_breakdown("r50", 360, 640, repeats=1 if quick else 3, mm_repeats=3 if quick else 7)


def measure_breakdown(model_name: str, h: int, w: int, repeats: int, mm_repeats: int) -> dict:
    from local2global.layers.box_ops import inverse_sigmoid, mask2box

    model = build_model(model_name)
    mm_before = matmul_flops(repeats=mm_repeats)
    size = (h, w)
    f0, f1 = synthetic_frame(0, h, w).to(device()), synthetic_frame(1, h, w).to(device())
    load_before = load_average()
    times: Dict[str, float] = {}
    flops: Dict[str, Dict] = {}
    with torch.no_grad():
        state, _ = model.process_frame(None, f0, size)
        images = model.preprocess([f1])
        x = images.tensor
        feats = model.backbone(x)
        times["backbone"] = median_time(lambda: model.backbone(x), repeats, warmup=0)
        mf, ms = model.pixel_decoder.forward_features(feats)
        times["pixel encoder"] = median_time(lambda: model.pixel_decoder.forward_features(feats), repeats, warmup=0)
        qs = _QuerySelection(model)
        q_local, coords = qs(*ms)
        times["query selection"] = median_time(lambda: qs(*ms), repeats, warmup=0)
        al = _Aligner(model)
        boxes = state.boxes.clamp(0, 1)
        times["aligner"] = median_time(lambda: al(state.queries, q_local, boxes), max(3, repeats), warmup=1)
        tgt = al(state.queries, q_local, boxes)
        dec = _Decoder(model)
        ref = inverse_sigmoid(boxes)

        def run_dec():
            lg, mk, hs = dec(tgt, ref, mf, *ms)
            mask2box(mk, fallback_boxes=boxes)
            return lg, mk

        times["decoder"] = median_time(run_dec, repeats, warmup=0)
        logits, masks = run_dec()
        pp = model.postprocessor
        padded = tuple(x.shape[-2:])

        def post():
            pp.reset()
            pp.update(logits[0], masks[0], padded, images.image_sizes[0], size)

        times["post-processing"] = median_time(post, max(3, repeats), warmup=1)
        # whole frame for reference (the parts should add up to about this)
        model.postprocessor.reset()
        times["whole frame (process_frame)"] = median_time(lambda: model.process_frame(state, f1, size), repeats,
                                                           warmup=0)
        # the same frame with the post-processing as it was before only the kept slots were finished (every slot
        # upsampled to full resolution and RLE-encoded on every frame; same results)
        model.postprocessor.deferred = False
        model.postprocessor.reset()
        times["whole frame, every slot post-processed"] = median_time(
            lambda: model.process_frame(state, f1, size), repeats, warmup=1)
        model.postprocessor.deferred = True
        model.postprocessor.reset()
        host_syncs = count_host_syncs(lambda: model.process_frame(state, f1, size))
        flops["backbone"] = _flops(_Backbone(model), (x,))
        flops["pixel encoder"] = _flops(_PixelEncoder(model), tuple(feats[k] for k in ("res2", "res3", "res4", "res5")))
        flops["query selection"] = _flops(qs, tuple(ms))
        flops["aligner"] = _flops(al, (state.queries, q_local, boxes))
        flops["decoder"] = _flops(dec, (tgt, ref, mf, *ms))
        flops["post-processing"] = {"flops": None, "note": "interpolation, threshold and RLE: not counted"}
    torch_threads = torch.get_num_threads()
    mm_after = matmul_flops(repeats=mm_repeats)
    mm = {"best": max(mm_before["best"], mm_after["best"]),
          "median": (mm_before["median"] + mm_after["median"]) / 2, "before": mm_before, "after": mm_after}
    return {"model": model_name, "resolution": [h, w], "num_queries": model.num_queries, "repeats": repeats,
            "times_s": times, "flops": flops, "host_syncs": host_syncs,
            "matmul_flops_per_s": mm, "threads": torch_threads, "load_avg_before": load_before,
            "load_avg_after": load_average()}


@renderer("breakdown")
def render_breakdown(rec: dict) -> str:
    f = rec["figures"]
    t, fl, mm_rec = f["times_s"], f["flops"], f["matmul_flops_per_s"]
    mm = mm_rec["best"] if isinstance(mm_rec, dict) else mm_rec
    total = sum(t[p] for p in PARTS)
    rows = ["| part | s / frame | share | GFLOPs | achieved GFLOP/s | % of matmul peak | uncounted ops |",
            "|---|---:|---:|---:|---:|---:|---|"]
    tot_flops = 0.0
    for p in PARTS:
        g = fl.get(p, {}).get("flops")
        tot_flops += g or 0.0
        unc = ", ".join(f"{k} ×{v}" for k, v in sorted(fl.get(p, {}).get("uncounted_ops", {}).items())) or "-"
        if fl.get(p, {}).get("counter"):
            unc = "counted by " + fl[p]["counter"] + " (fvcore's trace fails here)"
        if fl.get(p, {}).get("error"):
            unc = "fvcore failed: " + fl[p]["error"][:80]
        if fl.get(p, {}).get("note"):
            unc = fl[p]["note"]
        rate = (g / t[p]) if g else None
        rows.append(f"| {p} | {t[p]:.3f} | {100 * t[p] / total:.1f}% | {g / 1e9:.2f} | {rate / 1e9:.1f} | "
                    f"{100 * rate / mm:.0f}% | {unc} |" if g else
                    f"| {p} | {t[p]:.3f} | {100 * t[p] / total:.1f}% | - | - | - | {unc} |")
    rows.append(f"| **sum of parts** | **{total:.3f}** | 100% | **{tot_flops / 1e9:.2f}** | "
                f"{tot_flops / total / 1e9:.1f} | {100 * tot_flops / total / mm:.0f}% | |")
    before = t.get("whole frame, every slot post-processed")
    syncs = f.get("host_syncs")
    lines = rows + ["", f"* Whole frame (`process_frame`, same input): {t['whole frame (process_frame)']:.3f} s"
                    + (f"; with every slot post-processed on every frame (the post-processing before it finished "
                       f"only the kept slots, `deferred=False`, same results): {before:.3f} s" if before else "")
                    + "."]
    if syncs:
        lines.append("* Host copies per frame (calls of `Tensor.tolist` / `.item` / `.cpu` / `.numpy` during "
                     "`process_frame` of frame t > 0): " + ", ".join(f"{k} {v}" for k, v in syncs.items())
                     + f" ({sum(syncs.values())} in all; before the level shapes were carried as Python ints: 20 "
                     "`.tolist()` + 1 `.cpu()`, see the GPU-readiness notes).")
    lines += [
                    f"* Dense float32 matmul (square 512/1024/2048, {f['threads']} thread(s)): **{mm / 1e9:.1f} GFLOP/s** "
                    f"best over sizes and runs (the ceiling used for the % column)"
                    + (f", {mm_rec['median'] / 1e9:.1f} GFLOP/s median" if isinstance(mm_rec, dict) else "") + ".",
                    "* Parts are timed one after the other (median of "
                    f"{f['repeats']} runs each) on a shared machine, so a part's rate can exceed the ceiling "
                    "measured at another moment (load changes between measurements); the shares are the robust "
                    "figure.",
                    "* FLOPs = 2 × fvcore's multiply-add count (+ handles for `scaled_dot_product_attention` and "
                    "bilinear `grid_sample`); element-wise operators (norms' arithmetic, the attention-weighted "
                    "`addcmul` accumulation, activations) are not counted, so the rates are lower bounds.",
                    f"* Load average before / after: {f['load_avg_before']} / {f['load_avg_after']}."]
    return "\n".join(lines)


@headline("breakdown")
def headline_breakdown(rec: dict) -> str:
    t = rec["figures"]["times_s"]
    total = sum(t[p] for p in PARTS)
    top = sorted(PARTS, key=lambda p: -t[p])[:2]
    return ("Time split (R-50, 360×640, t > 0): " + ", ".join(f"{p} {100 * t[p] / total:.0f}%" for p in top)
            + f", aligner {100 * t['aligner'] / total:.1f}% of {total:.2f} s.")

"""Multi-scale deformable attention (Deformable DETR), parameter-compatible with detrex.

The layer :class:`MultiScaleDeformableAttention` has detrex's parameter names, shapes and initialisation
(``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``), so detrex MaskDINO
checkpoints load unchanged. The sampling itself is one of three interchangeable implementations of the
same function:

* :func:`multi_scale_deformable_attn_pytorch` -- the reference: per level one bilinear ``grid_sample``
  (zero padding, ``align_corners=False``), then the attention-weighted sum. It is the oracle for every other
  path (tests compare against it) and is what detrex runs without its compiled extension.
* :func:`multi_scale_deformable_attn_fast` -- the same function with a cheaper memory layout (see its
  docstring); pure PyTorch, differentiable, device-agnostic.
* a compiled kernel (torch-ms-deform-attn's, detrex's ``_C`` or mmcv's, all with the signature of
  ``MultiScaleDeformableAttnFunction.apply``), used for CUDA tensors when one passes its probe: each installed
  candidate is run once on a tiny CUDA input, forward and backward, against the reference
  (:func:`get_compiled_kernel`), because importing is not enough (current detrex imports without its ``_C`` and
  fails in the first forward). A failing candidate costs one warning and the PyTorch path is used.

Which one runs is decided at call time by :func:`get_implementation`: the module-level setting
(:func:`set_implementation`) or, when unset, the environment variable ``L2G_MSDA_IMPL``:

* ``"auto"`` (default): a compiled kernel that passed its probe for CUDA tensors, else ``DEFAULT_PYTORCH_IMPL``
  (``"fast"``: measured 2.5x faster forward / 1.7x forward+backward on CPU; not yet timed on a GPU);
* ``"reference"``: always the reference function (forces the oracle path everywhere);
* ``"fast"``: always the fast pure-PyTorch function;
* ``"compiled"``: a compiled kernel on any device, CPU included (e.g. a CPU build of torch-ms-deform-attn); raises,
  with every candidate's failure, if none passes its probe there.

The compiled CUDA kernels accumulate gradients with atomic adds: training with them is not bitwise
reproducible run to run (the PyTorch paths on CPU are; ``--resume`` reproducibility is checked on CPU).

Level sizes are needed as Python ints. :func:`spatial_shapes_tensor` builds the ``(L, 2)`` device tensor once per
input size and attaches the host copy to it, and :func:`host_spatial_shapes` reads that copy, so no attention
call reads the sizes back from the device (a host synchronisation per call on CUDA).

The layer always computes in float32: autocast is disabled inside and inputs/weights are cast to float32,
so the result is float32 even under ``torch.autocast(dtype=bfloat16)``.
"""

from __future__ import annotations

from collections import OrderedDict
import importlib
import logging
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
import torch.nn.functional as F

__all__ = [
    "MultiScaleDeformableAttention",
    "multi_scale_deformable_attn_pytorch",
    "multi_scale_deformable_attn_fast",
    "multi_scale_deformable_attn",
    "get_compiled_kernel",
    "compiled_kernel_name",
    "probe_kernel",
    "register_compiled_kernel",
    "spatial_shapes_tensor",
    "host_spatial_shapes",
    "COMPILED_CANDIDATES",
    "set_implementation",
    "get_implementation",
    "IMPLEMENTATIONS",
    "ENV_VAR",
]

logger = logging.getLogger(__name__)

ENV_VAR = "L2G_MSDA_IMPL"
IMPLEMENTATIONS = ("auto", "reference", "fast", "compiled")
# The pure-PyTorch path used by "auto" when no compiled kernel applies. Chosen by measurement (the numbers
# are in the docstring of multi_scale_deformable_attn_fast; rerun with `python -m local2global.layers.ms_deform_attn`).
DEFAULT_PYTORCH_IMPL = "fast"

_implementation: Optional[str] = None  # module-level override; None -> environment variable / "auto"

SpatialShapes = Union[Tensor, Sequence[Tuple[int, int]]]


def set_implementation(name: Optional[str]) -> None:
    """Select the sampling implementation for all layers (``None`` restores the env-var/default behaviour).

    Args:
        name: one of :data:`IMPLEMENTATIONS` or ``None``.
    """
    global _implementation
    if name is not None and name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown multi-scale deformable attention implementation {name!r}; "
                         f"expected one of {IMPLEMENTATIONS}")
    _implementation = name


def get_implementation() -> str:
    """The implementation name in effect (module setting, else ``$L2G_MSDA_IMPL``, else ``"auto"``)."""
    if _implementation is not None:
        return _implementation
    name = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"environment variable {ENV_VAR}={name!r} is not one of {IMPLEMENTATIONS}")
    return name


#: Attribute under which :func:`spatial_shapes_tensor` stores the host copy on the device tensor it returns.
_HOST_SHAPES_ATTR = "_l2g_host_shapes"
#: Distinct ``(shapes, device)`` pairs whose device tensors are kept (a video has one input size; a test set a few).
_SHAPES_CACHE_SIZE = 64
_shapes_cache: "OrderedDict[Tuple[Tuple[Tuple[int, int], ...], str], Tuple[Tensor, Tensor]]" = OrderedDict()


def spatial_shapes_tensor(shapes: Sequence[Tuple[int, int]], device: Union[str, torch.device, None] = None
                          ) -> Tuple[Tensor, Tensor]:
    """``spatial_shapes (L, 2)`` and ``level_start_index (L,)`` int64 tensors on ``device`` that carry their
    Python values.

    Why: the sampling functions need the level sizes as Python ints (to split and view the value tensor), and
    reading them back from a CUDA tensor (``.tolist()``) is a host synchronisation that stalls the launch queue
    once per attention call. The tensor returned here keeps the host copy (:func:`host_spatial_shapes` reads it
    without touching the device). The pair is cached per ``(shapes, device)``, so building it again for every
    frame costs no host-to-device copy either (a blocking copy from pageable memory synchronises the stream too).
    The cached tensors are shared: callers must not modify them in place.

    Args:
        shapes: ``(h_l, w_l)`` per level (ints or 0-d tensors / ``torch.Size`` entries).
        device: where the tensors live.

    Returns:
        ``(spatial_shapes, level_start_index)``.
    """
    host = tuple((int(h), int(w)) for h, w in shapes)
    device = torch.device("cpu" if device is None else device)
    key = (host, str(device))
    cached = _shapes_cache.get(key)
    if cached is not None:
        _shapes_cache.move_to_end(key)
        return cached
    starts, total = [], 0
    for h, w in host:
        starts.append(total)
        total += h * w
    spatial = torch.tensor(host, dtype=torch.long, device=device).view(len(host), 2)
    start_index = torch.tensor(starts, dtype=torch.long, device=device)
    setattr(spatial, _HOST_SHAPES_ATTR, host)
    _shapes_cache[key] = (spatial, start_index)
    if len(_shapes_cache) > _SHAPES_CACHE_SIZE:
        _shapes_cache.popitem(last=False)
    return spatial, start_index


def host_spatial_shapes(spatial_shapes: SpatialShapes) -> List[Tuple[int, int]]:
    """``(L, 2)`` tensor or sequence of ``(h, w)`` -> list of Python int pairs.

    A tensor from :func:`spatial_shapes_tensor` answers from its host copy; any other tensor is read back with
    ``.tolist()`` (a host synchronisation on an accelerator).
    """
    if isinstance(spatial_shapes, Tensor):
        host = getattr(spatial_shapes, _HOST_SHAPES_ATTR, None)
        if host is not None and len(host) == spatial_shapes.shape[0]:
            return list(host)
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


def _check_inputs(value: Tensor, shapes: List[Tuple[int, int]], sampling_locations: Tensor,
                  attention_weights: Tensor) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be (B, S, H, Dh), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError("sampling_locations must be (B, Nq, H, L, P, 2), got shape "
                         f"{tuple(sampling_locations.shape)}")
    total = sum(h * w for h, w in shapes)
    if total != value.shape[1]:
        raise ValueError(f"spatial_shapes {shapes} cover {total} tokens but value has {value.shape[1]}")
    if sampling_locations.shape[3] != len(shapes):
        raise ValueError(f"sampling_locations has {sampling_locations.shape[3]} levels but spatial_shapes "
                         f"has {len(shapes)}")
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(f"attention_weights shape {tuple(attention_weights.shape)} does not match "
                         f"sampling_locations {tuple(sampling_locations.shape)} without the last dim")


def multi_scale_deformable_attn_pytorch(value: Tensor, spatial_shapes: SpatialShapes,
                                        sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Reference multi-scale deformable attention (bilinear ``grid_sample`` per level).

    Sampling location ``(x, y)`` in ``[0, 1]`` (fraction of the level's width/height) reads pixel position
    ``(x * W_l - 0.5, y * H_l - 0.5)`` with bilinear interpolation; neighbours outside the map are zero.

    Args:
        value: ``(B, S, H, Dh)`` per-head values of all levels, flattened row-major and concatenated.
        spatial_shapes: ``(L, 2)`` ``(h_l, w_l)`` per level (tensor or sequence).
        sampling_locations: ``(B, Nq, H, L, P, 2)`` normalised ``(x, y)``.
        attention_weights: ``(B, Nq, H, L, P)`` (softmax-normalised over ``L*P`` by the caller).

    Returns:
        ``(B, Nq, H*Dh)`` heads concatenated along the channel dim.
    """
    shapes = host_spatial_shapes(spatial_shapes)
    _check_inputs(value, shapes, sampling_locations, attention_weights)
    batch, _, heads, head_dim = value.shape
    _, num_query, _, num_levels, num_points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    values = value.split([h * w for h, w in shapes], dim=1)
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # (B, h*w, H, Dh) -> (B*H, Dh, h, w)
        v = values[lvl].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        # (B, Nq, H, P, 2) -> (B*H, Nq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(batch * heads, num_query, num_points, 2)
        # (B*H, Dh, Nq, P)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (B*H, Dh, Nq, L*P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, num_query, num_levels * num_points)
    out = (stacked * weights).sum(-1).view(batch, heads * head_dim, num_query)
    return out.transpose(1, 2).contiguous()


def _permute_pairs(x: Tensor, dims: Sequence[int]) -> Tensor:
    """``x.permute(*dims, -1).contiguous()`` for ``x`` ending in a size-2 dim, moving each pair as one element.

    A float32 pair is viewed as one int64 (a float64 pair as one complex128), so the permuting copy runs over
    8- or 16-byte elements instead of an innermost loop of length 2 (measured several times faster on CPU).
    """
    paired = {torch.float32: torch.int64, torch.float64: torch.complex128}.get(x.dtype)
    if paired is None or x.shape[-1] != 2:
        return x.permute(*dims, x.dim() - 1).contiguous()
    x = x.contiguous()
    return x.view(paired).squeeze(-1).permute(*dims).contiguous().unsqueeze(-1).view(x.dtype)


class _PairPermute(torch.autograd.Function):
    """Differentiable :func:`_permute_pairs` (a dtype view has no autograd formula of its own)."""

    @staticmethod
    def forward(ctx, x: Tensor, dims: Tuple[int, ...]) -> Tensor:
        ctx.inverse = tuple(sorted(range(len(dims)), key=lambda i: dims[i]))
        return _permute_pairs(x, dims)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _permute_pairs(grad, ctx.inverse), None


def multi_scale_deformable_attn_fast(value: Tensor, spatial_shapes: SpatialShapes,
                                     sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Same function as :func:`multi_scale_deformable_attn_pytorch` with a cheaper memory layout.

    Differences to the reference (the arithmetic per sample is identical; only the summation order of the
    ``L*P`` weighted terms changes, so results agree to float32 rounding, ~1e-6):

    * heads are folded into the batch once for all levels: ``value`` is permuted a single time to
      ``(B*H, Dh, S)`` and each level is a *view* of it (no per-level copy);
    * the grid is laid out ``(B*H, L, P, Nq, 2)`` so that ``grid_sample`` returns ``(B*H, Dh, P, Nq)`` with the
      query index innermost;
    * the attention-weighted sum is accumulated point by point with ``addcmul`` on contiguous
      ``(B*H, Dh, Nq)`` rows, instead of stacking all ``L*P`` samples into one large tensor and reducing over
      a short innermost dimension.

    Measured on CPU (float32, 2 threads, ``python -m local2global.layers.ms_deform_attn``), D=256, 8 heads,
    4 levels ``48x80, 24x40, 12x20, 6x10`` (a 360x640 frame padded to 384x640; S = 5100), 4 points, B=1:
    encoder self-attention (Nq = 5100) forward 82 -> 32 ms, forward+backward 252 -> 145 ms;
    300-query cross-attention forward 2.1 -> 1.3 ms (forward+backward on par, ~8 ms).
    With 1 thread: 142 -> 58 ms forward, 447 -> 245 ms forward+backward (Nq = 5100).

    Args/Returns: as :func:`multi_scale_deformable_attn_pytorch`.
    """
    shapes = host_spatial_shapes(spatial_shapes)
    _check_inputs(value, shapes, sampling_locations, attention_weights)
    batch, num_value, heads, head_dim = value.shape
    _, num_query, _, num_levels, num_points, _ = sampling_locations.shape
    bh = batch * heads
    # (B, S, H, Dh) -> (B*H, Dh, S): one copy for all levels.
    flat_value = value.permute(0, 2, 3, 1).reshape(bh, head_dim, num_value)
    # (B, Nq, H, L, P, 2) -> (B*H, L, P, Nq, 2). The permutation moves each (x, y) pair as one 8-byte element
    # (a float32 pair viewed as int64) where one is available: a permuting copy with an innermost size of 2 runs
    # element by element and was measured at several times the cost of the whole elementwise 2*loc-1.
    grids = _PairPermute.apply(2 * sampling_locations - 1, (0, 2, 3, 4, 1)).view(bh, num_levels, num_points,
                                                                               num_query, 2)
    # (B, Nq, H, L, P) -> (B*H, L, P, 1, Nq)
    weights = attention_weights.permute(0, 2, 3, 4, 1).reshape(bh, num_levels, num_points, 1, num_query)
    # Per-level / per-point pieces are taken with ``unbind`` (or ``split``), never by indexing in the loop: the
    # backward of each ``x[:, i]`` allocates and zero-fills a gradient of the *whole* ``x``, i.e. L*P full-size
    # buffers per call (measured on the demo's encoder: a fifth of a training step in ``fill_``), whereas an
    # unbind's backward stacks the pieces' gradients once.
    level_values = flat_value.split([h * w for h, w in shapes], dim=2)
    level_grids = grids.unbind(1)
    level_weights = weights.unbind(1)
    out: Optional[Tensor] = None
    for lvl, (h, w) in enumerate(shapes):
        level_value = level_values[lvl].view(bh, head_dim, h, w)
        # (B*H, Dh, P, Nq)
        sampled = F.grid_sample(level_value, level_grids[lvl], mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        for point, weight in zip(sampled.unbind(2), level_weights[lvl].unbind(1)):
            out = point * weight if out is None else torch.addcmul(out, point, weight)
    assert out is not None
    # (B*H, Dh, Nq) -> (B, Nq, H*Dh)
    return out.view(batch, heads * head_dim, num_query).transpose(1, 2).contiguous()


def benchmark(num_threads: int = 2, reps: int = 5) -> List[str]:
    """Time reference vs fast path at the realistic size quoted in :func:`multi_scale_deformable_attn_fast`.

    Returns:
        one line per (query count, implementation): max abs difference to the reference and min times (ms).
    """
    import time

    torch.set_num_threads(num_threads)
    shapes = torch.tensor([[48, 80], [24, 40], [12, 20], [6, 10]])
    num_value = int(shapes.prod(1).sum())
    gen = torch.Generator().manual_seed(0)
    lines = []
    for num_query in (num_value, 300):
        value = torch.randn(1, num_value, 8, 32, generator=gen)
        loc = torch.rand(1, num_query, 8, 4, 4, 2, generator=gen) * 1.2 - 0.1
        attn = torch.rand(1, num_query, 8, 4, 4, generator=gen).softmax(-1)
        expected = multi_scale_deformable_attn_pytorch(value, shapes, loc, attn)
        for name, fn in (("reference", multi_scale_deformable_attn_pytorch),
                         ("fast", multi_scale_deformable_attn_fast)):
            times = {}
            for mode in ("forward", "forward+backward"):
                inputs = [t.detach().clone().requires_grad_(mode != "forward") for t in (value, loc, attn)]
                best = float("inf")
                for _ in range(reps + 1):
                    tic = time.perf_counter()
                    with torch.set_grad_enabled(mode != "forward"):
                        out = fn(inputs[0], shapes, inputs[1], inputs[2])
                        if mode != "forward":
                            out.sum().backward()
                    best = min(best, time.perf_counter() - tic)
                times[mode] = best * 1e3
            with torch.no_grad():
                err = (fn(value, shapes, loc, attn) - expected).abs().max().item()
            lines.append(f"Nq={num_query:5d} S={num_value} {name:9s} max|diff|={err:.1e} "
                         f"forward {times['forward']:.1f} ms, forward+backward {times['forward+backward']:.1f} ms")
    return lines


# ----------------------------------------------------------------------------------------------------------
# Compiled kernels: probed, not assumed
# ----------------------------------------------------------------------------------------------------------
# A compiled kernel is any callable ``fn(value, spatial_shapes, level_start_index, sampling_locations,
# attention_weights, im2col_step) -> (B, Nq, H*Dh)`` (the signature of detrex's / mmcv's
# ``MultiScaleDeformableAttnFunction.apply`` and of torch-ms-deform-attn's ``MSDeformAttnFunction.apply``).
#
# Importing a candidate proves little: current detrex imports its ``_C`` extension inside a ``try`` at the
# *bottom* of ``detrex/layers/multi_scale_deform_attn.py``, so an installed but uncompiled detrex imports fine and
# its first forward raises ``NameError: name '_C' is not defined``; a ``_C`` built without CUDA imports and fails
# on the first CUDA tensor. Each candidate is therefore run once on a tiny input of the device it is meant for
# (forward and backward) and compared with the reference before it is adopted.

#: ``(label, module, attribute)`` of the candidates, tried in this order; the first that passes its probe wins.
#: torch-ms-deform-attn (PyPI, maintained, built against the installed torch: an sdist, so it needs a C++
#: compiler and, for CUDA, nvcc at install time) comes first; detrex's ``_C`` and mmcv's ops follow.
COMPILED_CANDIDATES: Tuple[Tuple[str, str, str], ...] = (
    ("torch-ms-deform-attn", "torch_ms_deform_attn", "MSDeformAttnFunction"),
    ("detrex", "detrex.layers.multi_scale_deform_attn", "MultiScaleDeformableAttnFunction"),
    ("mmcv", "mmcv.ops.multi_scale_deform_attn", "MultiScaleDeformableAttnFunction"),
)
#: Device types whose tensors are sent to a compiled kernel by ``"auto"`` / ``"compiled"``. CPU is not among them
#: (the pure-PyTorch paths are the CPU implementation); tests add ``"cpu"`` to exercise the dispatch.
COMPILED_DEVICE_TYPES: Tuple[str, ...] = ("cuda",)
#: Probe tolerance (float32; the kernels sum the ``L*P`` terms in their own order, ~1e-6 apart on the probe).
PROBE_ATOL = 1e-4
PROBE_RTOL = 1e-4
#: Probe input: 2 levels of 3x4 and 2x2, 2 heads of 4 channels, 5 queries, 2 points (locations partly outside
#: the maps, to exercise the zero padding), fixed seed.
_PROBE_SHAPES = ((3, 4), (2, 2))
_PROBE_DIMS = {"batch": 1, "heads": 2, "head_dim": 4, "queries": 5, "points": 2}
_PROBE_SEED = 0

# device type -> (label, kernel) after the lookup; (None, None) when nothing passed.
_compiled_kernels: Dict[str, Tuple[Optional[str], Optional[Callable[..., Tensor]]]] = {}
# device type -> "label: reason" of every candidate that was importable but failed (for errors / reports).
_probe_failures: Dict[str, List[str]] = {}
_registered_kernel: Optional[Callable[..., Tensor]] = None
_fallback_warned = False


def register_compiled_kernel(fn: Optional[Callable[..., Tensor]]) -> None:
    """Install (or with ``None`` remove) a compiled kernel with ``MultiScaleDeformableAttnFunction.apply``'s
    signature ``fn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step)``.

    A registered kernel is trusted (not probed) and used for every device type in :data:`COMPILED_DEVICE_TYPES`;
    ``None`` removes it and forgets earlier lookups, so the next call probes the candidates again.
    """
    global _registered_kernel
    _registered_kernel = fn
    _compiled_kernels.clear()
    _probe_failures.clear()


#: Distance (in pixels of each level) that test locations keep from pixel centres (see :func:`_off_pixel_centres`).
_CENTRE_MARGIN = 1e-3


def _off_pixel_centres(locations: Tensor, shapes: Sequence[Tuple[int, int]]) -> Tensor:
    """Move sampling locations that fall (almost) exactly on a pixel centre of their level by a small step.

    At a pixel centre the bilinear sample is continuous but its derivative in that coordinate jumps, and two
    correct implementations may return either one-sided derivative (``grid_sample`` and torch-ms-deform-attn did:
    4.7 vs -0.07 for one location of 150k drawn by ``torch.rand``, at ``x * W - 0.5 = 8.0`` exactly). Comparing
    gradients is meaningful only away from those points.

    Args:
        locations: ``(B, Nq, H, L, P, 2)`` normalised ``(x, y)``.
        shapes: ``(h_l, w_l)`` per level.

    Returns:
        a copy of ``locations`` with every coordinate at least :data:`_CENTRE_MARGIN` pixels from a centre.
    """
    out = locations.clone()
    for lvl, (h, w) in enumerate(shapes):
        for axis, size in ((0, w), (1, h)):
            coord = out[:, :, :, lvl, :, axis]
            pixel = coord * size - 0.5
            near = (pixel - pixel.round()).abs() < _CENTRE_MARGIN
            coord[near] += 2 * _CENTRE_MARGIN / size
    return out


def _probe_inputs(device: torch.device) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The probe's ``value, spatial_shapes, level_start_index, sampling_locations, attention_weights``."""
    gen = torch.Generator().manual_seed(_PROBE_SEED)
    d = _PROBE_DIMS
    levels = len(_PROBE_SHAPES)
    num_value = sum(h * w for h, w in _PROBE_SHAPES)
    value = torch.randn(d["batch"], num_value, d["heads"], d["head_dim"], generator=gen)
    loc = torch.rand(d["batch"], d["queries"], d["heads"], levels, d["points"], 2, generator=gen) * 1.4 - 0.2
    loc = _off_pixel_centres(loc, _PROBE_SHAPES)
    attn = torch.rand(d["batch"], d["queries"], d["heads"], levels * d["points"], generator=gen).softmax(-1)
    attn = attn.view(d["batch"], d["queries"], d["heads"], levels, d["points"])
    shapes = torch.tensor(_PROBE_SHAPES, dtype=torch.long)
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    return tuple(t.to(device) for t in (value, shapes, starts, loc, attn))  # type: ignore[return-value]


def probe_kernel(fn: Callable[..., Tensor], device: Union[str, torch.device]) -> Optional[str]:
    """Run ``fn`` once on a tiny input on ``device`` and compare it with the reference, forward and backward.

    Args:
        fn: a kernel with ``MultiScaleDeformableAttnFunction.apply``'s signature.
        device: where the kernel is meant to run (the probe's tensors live there).

    Returns:
        ``None`` when output and the gradients of value, locations and weights match the reference within
        :data:`PROBE_ATOL` / :data:`PROBE_RTOL`; else the reason (the exception, or the largest deviation).
    """
    device = torch.device(device)
    results = {}
    try:
        value, shapes, starts, loc, attn = _probe_inputs(device)
        with torch.enable_grad(), torch.autocast(device_type=device.type, enabled=False):
            for name, run in (("kernel", lambda v, l, a: fn(v, shapes, starts, l, a, 64)),
                              ("reference", lambda v, l, a: multi_scale_deformable_attn_pytorch(
                                  v, _PROBE_SHAPES, l, a))):
                leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
                out = run(*leaves)
                # A fixed upstream gradient that differs per element (a sum() would hide transposed outputs).
                upstream = torch.linspace(-1.0, 1.0, out.numel(), device=device).view_as(out)
                (out * upstream).sum().backward()
                results[name] = [out.detach()] + [t.grad for t in leaves]
    except Exception as exc:  # NameError (detrex without _C), RuntimeError (no CUDA build), ...
        return f"{type(exc).__name__}: {exc}"
    for what, got, ref in zip(("output", "grad value", "grad locations", "grad weights"),
                              results["kernel"], results["reference"]):
        if got is None or got.shape != ref.shape:
            return f"{what}: shape {None if got is None else tuple(got.shape)}, expected {tuple(ref.shape)}"
        if not torch.allclose(got.float(), ref, atol=PROBE_ATOL, rtol=PROBE_RTOL):
            return f"{what} differs from the reference by up to {(got.float() - ref).abs().max().item():.3g}"
    return None


def _not_installed(exc: BaseException, module_name: str) -> bool:
    """``True`` when ``exc`` only says that the candidate (or a parent package of it) is not installed: that is
    the normal case and worth no warning, unlike a candidate that is installed but broken (``detrex._C`` missing
    in older detrex raises ImportError from *inside* the module)."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return False
    parts = module_name.split(".")
    return exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def get_compiled_kernel(device: Union[str, torch.device, None] = None) -> Optional[Callable[..., Tensor]]:
    """The compiled kernel for ``device`` that passed its probe, or ``None`` (looked up once per device type).

    The candidates of :data:`COMPILED_CANDIDATES` are imported and probed (:func:`probe_kernel`) in order; the
    first that reproduces the reference is adopted. When an installed candidate fails (import error from inside
    the package, exception in its forward or backward, wrong numbers), one warning per process says why and that
    the pure-PyTorch implementation is used instead; candidates that are simply not installed are skipped quietly.

    Args:
        device: the device the kernel will run on; ``None`` means ``"cuda"``.

    Returns:
        ``fn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step)`` or
        ``None``.
    """
    global _fallback_warned
    device_type = torch.device("cuda" if device is None else device).type
    if _registered_kernel is not None:
        return _registered_kernel
    if device_type in _compiled_kernels:
        return _compiled_kernels[device_type][1]
    probe_device = torch.device(device_type) if device is None else torch.device(device)
    if probe_device.type == "cuda" and not torch.cuda.is_available():
        _compiled_kernels[device_type] = (None, None)
        _probe_failures[device_type] = ["CUDA is not available"]
        return None
    failures: List[str] = []
    chosen: Tuple[Optional[str], Optional[Callable[..., Tensor]]] = (None, None)
    for label, module_name, attr in COMPILED_CANDIDATES:
        try:
            module = importlib.import_module(module_name)
            function = getattr(module, attr)
        except Exception as exc:  # ImportError, broken optional dependencies, missing attribute ...
            if _not_installed(exc, module_name):
                logger.debug("deformable-attention kernel %s not installed (%s)", label, exc)
            else:
                failures.append(f"{label}: import failed ({type(exc).__name__}: {exc})")
            continue
        reason = probe_kernel(function.apply, probe_device)
        if reason is None:
            chosen = (label, function.apply)
            logger.info("using the compiled multi-scale deformable attention kernel of %s on %s (probe passed)",
                        label, device_type)
            break
        failures.append(f"{label}: probe on {device_type} failed ({reason})")
    _compiled_kernels[device_type] = chosen
    _probe_failures[device_type] = failures
    if failures and not _fallback_warned:
        _fallback_warned = True
        fallback = chosen[0] if chosen[0] is not None else f"the PyTorch implementation {DEFAULT_PYTORCH_IMPL!r}"
        logger.warning("compiled deformable-attention kernel not used: %s; using %s instead",
                       "; ".join(failures), fallback)
    return chosen[1]


def compiled_kernel_name(device: Union[str, torch.device, None] = None) -> Optional[str]:
    """Label of the kernel :func:`get_compiled_kernel` adopted for ``device`` (``"registered"`` for one installed
    by :func:`register_compiled_kernel`), or ``None``. Runs the lookup if it has not run yet."""
    if _registered_kernel is not None:
        return "registered"
    get_compiled_kernel(device)
    return _compiled_kernels[torch.device("cuda" if device is None else device).type][0]


def _reset_compiled_lookup() -> None:
    """Forget the lookups and the warning (tests)."""
    global _fallback_warned
    _compiled_kernels.clear()
    _probe_failures.clear()
    _fallback_warned = False


def multi_scale_deformable_attn(value: Tensor, spatial_shapes: SpatialShapes, level_start_index: Optional[Tensor],
                                sampling_locations: Tensor, attention_weights: Tensor,
                                im2col_step: int = 64) -> Tensor:
    """Dispatch to the implementation selected by :func:`get_implementation` (shapes as the reference).

    Args:
        value: ``(B, S, H, Dh)``.
        spatial_shapes: ``(L, 2)`` int64 tensor (from :func:`spatial_shapes_tensor` it carries its host copy, so
            the PyTorch paths need no device-to-host copy) or a sequence of ``(h, w)``.
        level_start_index: ``(L,)`` int64 (needed by compiled kernels only; derived when ``None``).
        sampling_locations: ``(B, Nq, H, L, P, 2)``.
        attention_weights: ``(B, Nq, H, L, P)``.
        im2col_step: compiled-kernel batching step.

    Returns:
        ``(B, Nq, H*Dh)``.
    """
    name = get_implementation()
    if name == "reference":
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
    if name == "fast":
        return multi_scale_deformable_attn_fast(value, spatial_shapes, sampling_locations, attention_weights)
    if name in ("auto", "compiled"):
        # "auto" sends only COMPILED_DEVICE_TYPES (CUDA) to a compiled kernel; "compiled" asks for one on any device
        # (a CPU build of torch-ms-deform-attn: measured 1.7-2x faster than "fast" on the encoder, see RESULTS.md).
        use = name == "compiled" or value.device.type in COMPILED_DEVICE_TYPES
        kernel = get_compiled_kernel(value.device) if use else None
        if kernel is not None:
            if not isinstance(spatial_shapes, Tensor) or level_start_index is None:
                host = host_spatial_shapes(spatial_shapes)
                spatial_shapes, derived_start = spatial_shapes_tensor(host, value.device)
                level_start_index = derived_start if level_start_index is None else level_start_index
            return kernel(value.contiguous(), spatial_shapes, level_start_index,
                          sampling_locations.contiguous(), attention_weights.contiguous(), im2col_step)
        if name == "compiled":
            failures = _probe_failures.get(value.device.type) or [
                "none of " + ", ".join(c[0] for c in COMPILED_CANDIDATES) + " is installed"]
            raise RuntimeError(f"{ENV_VAR}='compiled' but no compiled deformable-attention kernel works for a "
                               f"{value.device} tensor: " + "; ".join(failures))
    impl = multi_scale_deformable_attn_fast if DEFAULT_PYTORCH_IMPL == "fast" else multi_scale_deformable_attn_pytorch
    return impl(value, spatial_shapes, sampling_locations, attention_weights)


# ----------------------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------------------
class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention with detrex's parameters.

    Args:
        embed_dim: width ``D`` (divisible by ``num_heads``).
        num_heads: heads ``H``.
        num_levels: feature levels ``L``.
        num_points: sampling points ``P`` per head and level.
        dropout: dropout on the projected output (before the residual).
        batch_first: inputs are ``(B, N, D)`` when True, ``(N, B, D)`` otherwise.
        img2col_step: batching step of the compiled kernel (unused by the PyTorch paths).
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4,
                 dropout: float = 0.0, batch_first: bool = True, img2col_step: int = 64):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        head_dim = embed_dim // num_heads
        if head_dim & (head_dim - 1) != 0:
            logger.warning("MultiScaleDeformableAttention head dim %d is not a power of 2 (slower kernels)",
                           head_dim)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.batch_first = batch_first
        self.im2col_step = img2col_step
        self.dropout = nn.Dropout(dropout)
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """detrex's initialisation: zero offset weights with a ring of per-head directions as bias (point i at
        distance i+1), zero attention weights (uniform softmax), Xavier-uniform projections with zero bias."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        grid = directions.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    @staticmethod
    def _sampling_locations(offsets: Tensor, reference_points: Tensor, spatial_shapes: Tensor) -> Tensor:
        """``(B, Nq, H, L, P, 2)`` normalised sampling locations from the offsets and the references.

        Same arithmetic as detrex (``ref + offset / (W_l, H_l)`` for points, ``ref_xy + offset / P * ref_wh *
        0.5`` for boxes, bit for bit), but every per-level / per-reference operand is first expanded to a
        contiguous ``(..., L, P, 2)`` block: broadcasting a ``(L, 2)`` int64 normaliser or a ``(B, Nq, 1, L, 1,
        2)`` reference straight into the 6-d offsets runs element by element with an innermost size of 2
        (measured: ~20 ms per call for the demo encoder's 1.3M offsets, a tenth of a training step), whereas
        the blocked operands broadcast over whole rows of ``L*P*2`` values.
        """
        batch, num_query, _, num_levels, num_points, _ = offsets.shape
        block = (num_levels, num_points, 2)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
            normalizer = normalizer[:, None, :].expand(block).contiguous()
            ref = reference_points[:, :, :, None, :].expand(batch, num_query, *block).contiguous()
            return ref[:, :, None] + offsets / normalizer
        if reference_points.shape[-1] == 4:
            ref_xy = reference_points[:, :, :, None, :2].expand(batch, num_query, *block).contiguous()
            ref_wh = reference_points[:, :, :, None, 2:].expand(batch, num_query, *block).contiguous()
            return ref_xy[:, :, None] + offsets / num_points * ref_wh[:, :, None] * 0.5
        raise ValueError("reference_points must end in 2 (points) or 4 (boxes), got shape "
                         f"{tuple(reference_points.shape)}")

    @staticmethod
    def _linear32(layer: nn.Linear, x: Tensor) -> Tensor:
        return F.linear(x, layer.weight.float(), None if layer.bias is None else layer.bias.float())

    def forward(self, query: Tensor, key: Optional[Tensor] = None, value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None, query_pos: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None, reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None, level_start_index: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Attend from each query to ``P`` learned sampling points around its reference in every level.

        Args:
            query: ``(B, Nq, D)`` (``(Nq, B, D)`` if not ``batch_first``).
            key: unused (API compatibility).
            value: ``(B, S, D)`` flattened multi-scale features; defaults to ``query``.
            identity: residual added to the output, shape of ``query``; defaults to ``query`` (without pos).
            query_pos: positional embedding added to ``query`` before offsets/weights are predicted.
            key_padding_mask: ``(B, S)`` bool, True = padded value token (its value is zeroed).
            reference_points: ``(B, Nq, L, 2)`` normalised ``(x, y)`` points (offsets are divided by
                ``(W_l, H_l)``) or ``(B, Nq, L, 4)`` normalised ``(cx, cy, w, h)`` boxes
                (location = ``ref_xy + offset / P * ref_wh * 0.5``).
            spatial_shapes: ``(L, 2)`` int64 ``(h_l, w_l)``.
            level_start_index: ``(L,)`` int64 start of each level in ``S``.

        Returns:
            ``identity + dropout(output_proj(attn))``, float32, shaped like ``query``.
        """
        if reference_points is None or spatial_shapes is None:
            raise ValueError("MultiScaleDeformableAttention needs reference_points and spatial_shapes")
        if value is None:
            value = query
        if identity is None:
            identity = query
        with torch.autocast(device_type=query.device.type, enabled=False):
            query = query.float()
            if query_pos is not None:
                query = query + query_pos.float()
            value = value.float()
            identity = identity.float()
            reference_points = reference_points.float()
            if not self.batch_first:
                query = query.transpose(0, 1)
                value = value.transpose(0, 1)
            batch, num_query, _ = query.shape
            _, num_value, _ = value.shape
            if not isinstance(spatial_shapes, Tensor):
                spatial_shapes, derived_start = spatial_shapes_tensor(host_spatial_shapes(spatial_shapes),
                                                                      value.device)
                level_start_index = derived_start if level_start_index is None else level_start_index
            if spatial_shapes.shape[0] != self.num_levels:
                raise ValueError(f"spatial_shapes has {spatial_shapes.shape[0]} levels, layer expects "
                                 f"num_levels={self.num_levels}")

            value = self._linear32(self.value_proj, value)
            if key_padding_mask is not None:
                value = value.masked_fill(key_padding_mask[..., None], 0.0)
            value = value.view(batch, num_value, self.num_heads, -1)
            offsets = self._linear32(self.sampling_offsets, query).view(
                batch, num_query, self.num_heads, self.num_levels, self.num_points, 2)
            weights = self._linear32(self.attention_weights, query).view(
                batch, num_query, self.num_heads, self.num_levels * self.num_points)
            weights = weights.softmax(-1).view(batch, num_query, self.num_heads, self.num_levels, self.num_points)

            locations = self._sampling_locations(offsets, reference_points, spatial_shapes)

            out = multi_scale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights,
                                              self.im2col_step)
            out = self._linear32(self.output_proj, out)
            if not self.batch_first:
                out = out.transpose(0, 1)
            return identity + self.dropout(out)


if __name__ == "__main__":  # pragma: no cover - manual benchmark
    logging.basicConfig(level=logging.INFO)
    for line in benchmark():
        logger.info(line)

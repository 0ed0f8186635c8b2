"""Multi-scale deformable attention: reference vs a naive bilinear loop, fast path vs reference, the layer,
the probed choice of a compiled kernel (stand-in detrex layouts) and the host copy of the level shapes."""

import importlib
import logging
import math
import sys
import types

import pytest
import torch

from local2global.modeling import ms_deform_attn as msda
from local2global.layers.ms_deform_attn import (
    MultiScaleDeformableAttention,
    multi_scale_deformable_attn_fast,
    multi_scale_deformable_attn_pytorch,
)

pytestmark = pytest.mark.timeout(120)


def naive_msda(value, shapes, locations, weights):
    """Per-point python loop: bilinear read at pixel (x*W - 0.5, y*H - 0.5), zero outside the map."""
    batch, _, heads, head_dim = value.shape
    _, num_query, _, num_levels, num_points, _ = locations.shape
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, num_query, heads, head_dim, dtype=torch.float64)
    for b in range(batch):
        for q in range(num_query):
            for hd in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(num_points):
                        x = locations[b, q, hd, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, hd, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(head_dim, dtype=torch.float64)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < h and 0 <= xx < w:
                                bw = (1 - abs(x - xx)) * (1 - abs(y - yy))
                                sample += bw * value[b, starts[lvl] + yy * w + xx, hd].double()
                        out[b, q, hd] += weights[b, q, hd, lvl, p].item() * sample
    return out.reshape(batch, num_query, heads * head_dim)


def random_inputs(batch, num_query, heads, head_dim, shapes, num_points, seed=0, margin=0.25):
    gen = torch.Generator().manual_seed(seed)
    num_value = sum(h * w for h, w in shapes)
    value = torch.randn(batch, num_value, heads, head_dim, generator=gen)
    # Locations partly outside [0, 1] exercise the zero padding.
    loc = torch.rand(batch, num_query, heads, len(shapes), num_points, 2, generator=gen) * (1 + 2 * margin) - margin
    attn = torch.randn(batch, num_query, heads, len(shapes) * num_points, generator=gen).softmax(-1)
    attn = attn.view(batch, num_query, heads, len(shapes), num_points)
    return torch.tensor(shapes), value, loc, attn


def test_reference_matches_naive_bilinear_loop():
    shapes = [(3, 5), (2, 3), (1, 2)]
    spatial, value, loc, attn = random_inputs(2, 4, 2, 3, shapes, num_points=3, seed=1)
    out = multi_scale_deformable_attn_pytorch(value, spatial, loc, attn)
    expected = naive_msda(value, shapes, loc, attn)
    assert out.shape == (2, 4, 6)
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=1e-6)
    # a location far outside every map reads zeros only
    loc_out = torch.full_like(loc, 3.0)
    assert multi_scale_deformable_attn_pytorch(value, spatial, loc_out, attn).abs().max() == 0


def test_reference_accepts_list_shapes_and_validates():
    shapes = [(3, 5), (2, 3)]
    spatial, value, loc, attn = random_inputs(1, 3, 2, 4, shapes, num_points=2)
    torch.testing.assert_close(multi_scale_deformable_attn_pytorch(value, shapes, loc, attn),
                               multi_scale_deformable_attn_pytorch(value, spatial, loc, attn))
    with pytest.raises(ValueError, match="cover"):
        multi_scale_deformable_attn_pytorch(value[:, :-1], spatial, loc, attn)


@pytest.mark.parametrize("batch,num_query", [(1, 300), (2, 51)])
def test_fast_matches_reference_forward_and_gradients(batch, num_query):
    shapes = [(12, 20), (6, 10), (3, 5), (2, 3)]
    spatial, value, loc, attn = random_inputs(batch, num_query, 4, 8, shapes, num_points=4, seed=3)
    grads = {}
    outs = {}
    upstream = torch.randn(batch, num_query, 32, generator=torch.Generator().manual_seed(9))
    for name, fn in (("ref", multi_scale_deformable_attn_pytorch), ("fast", multi_scale_deformable_attn_fast)):
        leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
        out = fn(leaves[0], spatial, leaves[1], leaves[2])
        (out * upstream).sum().backward()
        outs[name] = out.detach()
        grads[name] = [t.grad for t in leaves]
    torch.testing.assert_close(outs["fast"], outs["ref"], atol=1e-5, rtol=1e-5)
    for g_fast, g_ref, what in zip(grads["fast"], grads["ref"], ("value", "locations", "weights")):
        assert g_ref.abs().max() > 0, what
        torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-5, msg=lambda m: f"grad {what}: {m}")


def test_parameter_shapes_and_init():
    m = MultiScaleDeformableAttention(embed_dim=64, num_heads=8, num_levels=4, num_points=4)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (256, 64), "sampling_offsets.bias": (256,),
        "attention_weights.weight": (128, 64), "attention_weights.bias": (128,),
        "value_proj.weight": (64, 64), "value_proj.bias": (64,),
        "output_proj.weight": (64, 64), "output_proj.bias": (64,),
    }
    assert m.sampling_offsets.weight.abs().max() == 0
    assert m.attention_weights.weight.abs().max() == 0 and m.attention_weights.bias.abs().max() == 0
    assert m.value_proj.bias.abs().max() == 0 and m.output_proj.bias.abs().max() == 0
    bias = m.sampling_offsets.bias.view(8, 4, 4, 2)
    # head 0 points along +x, head 2 along +y (angle pi/2), head 1 diagonal; point i at distance (i+1)
    torch.testing.assert_close(bias[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(bias[0, 0, :, 1], torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[2, 3, 1], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[1, 2, 0], torch.tensor([1.0, 1.0]))
    assert torch.equal(bias[:, 0], bias[:, 3])  # same for every level
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDeformableAttention(embed_dim=60, num_heads=8)


def _layer_and_inputs(ref_dim, seed=0, batch=2, num_query=7):
    torch.manual_seed(seed)
    layer = MultiScaleDeformableAttention(embed_dim=32, num_heads=4, num_levels=3, num_points=2)
    with torch.no_grad():  # non-trivial offsets and weights
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    shapes = torch.tensor([[6, 8], [3, 4], [2, 2]])
    num_value = int(shapes.prod(1).sum())
    query = torch.randn(batch, num_query, 32)
    pos = torch.randn(batch, num_query, 32)
    value = torch.randn(batch, num_value, 32)
    refs = torch.rand(batch, num_query, 3, ref_dim) * 0.8 + 0.1
    return layer, shapes, query, pos, value, refs


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_layer_sampling_locations_follow_the_contract(ref_dim):
    layer, shapes, query, pos, value, refs = _layer_and_inputs(ref_dim)
    identity = torch.randn_like(query)
    out = layer(query, value=value, identity=identity, query_pos=pos, reference_points=refs,
                spatial_shapes=shapes)
    # independent re-computation of the documented formula
    q = query + pos
    b, n, _ = q.shape
    offsets = layer.sampling_offsets(q).view(b, n, 4, 3, 2, 2)
    weights = layer.attention_weights(q).view(b, n, 4, 6).softmax(-1).view(b, n, 4, 3, 2)
    if ref_dim == 2:
        wh = torch.tensor([[8.0, 6.0], [4.0, 3.0], [2.0, 2.0]])
        loc = refs[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]
    else:
        loc = refs[:, :, None, :, None, :2] + offsets / 2 * refs[:, :, None, :, None, 2:] * 0.5
    v = layer.value_proj(value).view(b, -1, 4, 8)
    expected = identity + layer.output_proj(multi_scale_deformable_attn_pytorch(v, shapes, loc, weights))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # identity defaults to the query without its positional embedding
    out_default = layer(query, value=value, query_pos=pos, reference_points=refs, spatial_shapes=shapes)
    torch.testing.assert_close(out_default - query, expected - identity, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_layer_implementations_agree_forward_and_backward(ref_dim):
    layer, shapes, query, pos, value, refs = _layer_and_inputs(ref_dim, seed=1)
    results = {}
    try:
        for impl in ("reference", "fast"):
            msda.set_implementation(impl)
            layer.zero_grad()
            q = query.clone().requires_grad_()
            out = layer(q, value=value, query_pos=pos, reference_points=refs, spatial_shapes=shapes)
            out.pow(2).sum().backward()
            results[impl] = (out.detach(), q.grad, layer.sampling_offsets.weight.grad.clone(),
                             layer.value_proj.weight.grad.clone())
    finally:
        msda.set_implementation(None)
    for a, b in zip(results["fast"], results["reference"]):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_layer_is_float32_under_bf16_autocast():
    layer, shapes, query, pos, value, refs = _layer_and_inputs(4, seed=2)
    expected = layer(query, value=value, query_pos=pos, reference_points=refs, spatial_shapes=shapes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(query.bfloat16(), value=value.bfloat16(), query_pos=pos, reference_points=refs,
                    spatial_shapes=shapes)
        out_fp32_in = layer(query, value=value, query_pos=pos, reference_points=refs, spatial_shapes=shapes)
    assert out.dtype == torch.float32 and out_fp32_in.dtype == torch.float32
    torch.testing.assert_close(out_fp32_in, expected, atol=1e-6, rtol=1e-6)  # no bf16 math inside
    torch.testing.assert_close(out, expected, atol=0.05, rtol=0.05)  # only the inputs were rounded to bf16


def test_key_padding_mask_and_sequence_first():
    layer, shapes, query, pos, value, refs = _layer_and_inputs(2, seed=3)
    mask = torch.zeros(value.shape[:2], dtype=torch.bool)
    mask[:, -10:] = True
    out = layer(query, value=value, query_pos=pos, reference_points=refs, spatial_shapes=shapes,
                key_padding_mask=mask)
    changed = value.clone()
    changed[:, -10:] = 1e3
    out_changed = layer(query, value=changed, query_pos=pos, reference_points=refs, spatial_shapes=shapes,
                        key_padding_mask=mask)
    torch.testing.assert_close(out, out_changed)
    layer.batch_first = False
    out_seq = layer(query.transpose(0, 1), value=value.transpose(0, 1), query_pos=pos.transpose(0, 1),
                    reference_points=refs, spatial_shapes=shapes, key_padding_mask=mask)
    torch.testing.assert_close(out_seq.transpose(0, 1), out)
    layer.batch_first = True
    with pytest.raises(ValueError, match="reference_points"):
        layer(query, value=value, reference_points=refs[..., :1], spatial_shapes=shapes)


def test_implementation_switch_and_compiled_hook(monkeypatch, request, fresh_kernel_lookup):
    calls = []
    monkeypatch.setattr(msda, "multi_scale_deformable_attn_pytorch",
                        lambda *a: calls.append("reference") or multi_scale_deformable_attn_pytorch(*a))
    monkeypatch.setattr(msda, "multi_scale_deformable_attn_fast",
                        lambda *a: calls.append("fast") or multi_scale_deformable_attn_fast(*a))
    kernel_calls = []
    msda.register_compiled_kernel(lambda *a: kernel_calls.append(1))
    request.addfinalizer(lambda: msda.register_compiled_kernel(None))
    spatial, value, loc, attn = random_inputs(1, 3, 2, 4, [(3, 4), (2, 2)], num_points=2)

    monkeypatch.delenv(msda.ENV_VAR, raising=False)
    assert msda.get_implementation() == "auto"
    msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    assert calls[-1] == msda.DEFAULT_PYTORCH_IMPL and not kernel_calls  # CPU: compiled kernel never used
    monkeypatch.setenv(msda.ENV_VAR, "reference")
    msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    assert calls[-1] == "reference"
    monkeypatch.setenv(msda.ENV_VAR, "compiled")  # asked for explicitly: used on a CPU tensor too
    msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    assert kernel_calls == [1]
    kernel_calls.clear()
    monkeypatch.setenv(msda.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="L2G_MSDA_IMPL"):
        msda.get_implementation()
    try:
        msda.set_implementation("fast")  # module setting wins over the environment
        assert msda.get_implementation() == "fast"
        msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
        assert calls[-1] == "fast"
        with pytest.raises(ValueError, match="unknown"):
            msda.set_implementation("cuda")
    finally:
        msda.set_implementation(None)
    assert not kernel_calls


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_blocked_sampling_locations_are_bit_identical_to_broadcasting(ref_dim):
    layer, shapes, query, _, _, refs = _layer_and_inputs(ref_dim, seed=2)
    b, n, _ = query.shape
    offsets = layer.sampling_offsets(query).view(b, n, 4, 3, 2, 2)
    if ref_dim == 2:
        wh = torch.stack([shapes[:, 1], shapes[:, 0]], -1)  # int64, as the layer gets it
        expected = refs[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]
    else:
        expected = refs[:, :, None, :, None, :2] + offsets / 2 * refs[:, :, None, :, None, 2:] * 0.5
    got = layer._sampling_locations(offsets, refs, shapes)
    assert got.shape == expected.shape == (b, n, 4, 3, 2, 2)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_pair_permute_equals_permute_and_has_exact_gradients(dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 5, 2, generator=gen).to(dtype)
    dims = (0, 2, 3, 1)
    expected = x.permute(0, 2, 3, 1, 4).contiguous()
    got = msda._permute_pairs(x, dims)
    assert got.is_contiguous() and got.dtype == dtype
    assert torch.equal(got, expected)
    assert torch.equal(msda._permute_pairs(x.transpose(1, 2), dims), x.transpose(1, 2).permute(0, 2, 3, 1, 4))
    # the backward is the inverse permutation, exactly
    x64 = torch.randn(2, 3, 4, 5, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: msda._PairPermute.apply(t, dims), (x64,))
    x32 = x.float().requires_grad_()
    weight = torch.randn(expected.shape, generator=gen)
    (msda._PairPermute.apply(x32, dims) * weight).sum().backward()
    assert torch.equal(x32.grad, weight.permute(0, 3, 1, 2, 4))


# ----------------------------------------------------------------------------------------------------------
# Compiled-kernel choice: probed, not assumed
# ----------------------------------------------------------------------------------------------------------
DETREX_ENTRY = next(c for c in msda.COMPILED_CANDIDATES if c[0] == "detrex")

# The shape of detrex's layers/multi_scale_deform_attn.py: an autograd Function whose forward and backward call the
# compiled ``_C`` module. Current detrex imports ``_C`` inside a try at the *bottom* of the file (an uncompiled
# install imports fine, ``_C`` stays unbound); older detrex imports it at the top (the import fails).
_DETREX_FUNCTION_SOURCE = '''
import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable


class MultiScaleDeformableAttnFunction(Function):
    @staticmethod
    def forward(ctx, value, value_spatial_shapes, value_level_start_index, sampling_locations,
                attention_weights, im2col_step):
        ctx.im2col_step = im2col_step
        output = _C.ms_deform_attn_forward(value, value_spatial_shapes, value_level_start_index,
                                           sampling_locations, attention_weights, ctx.im2col_step)
        ctx.save_for_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations,
                              attention_weights)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        raise AssertionError("never reached without _C")
'''
_CURRENT_DETREX_TAIL = '''
try:
    from detrex import _C
except ImportError:
    _msg = "detrex is not compiled successfully, please build following the instructions!"
'''
_OLD_DETREX_HEAD = "from detrex import _C\n"


@pytest.fixture
def fresh_kernel_lookup():
    """Every test starts and ends with no lookup done, no registered kernel and no warning issued yet."""
    msda.register_compiled_kernel(None)
    msda._reset_compiled_lookup()
    yield
    msda.register_compiled_kernel(None)
    msda._reset_compiled_lookup()


def _install_current_detrex_stand_in(monkeypatch):
    """Stand-in modules ``detrex`` (no ``_C``), ``detrex.layers`` and ``detrex.layers.multi_scale_deform_attn``
    in sys.modules; the last one is executed from detrex's layout, so its bottom ``try`` really fails."""
    detrex = types.ModuleType("detrex")
    layers = types.ModuleType("detrex.layers")
    detrex.layers = layers
    monkeypatch.setitem(sys.modules, "detrex", detrex)
    monkeypatch.setitem(sys.modules, "detrex.layers", layers)
    module = types.ModuleType(DETREX_ENTRY[1])
    exec(compile(_DETREX_FUNCTION_SOURCE + _CURRENT_DETREX_TAIL, "<detrex stand-in>", "exec"), module.__dict__)
    layers.multi_scale_deform_attn = module
    monkeypatch.setitem(sys.modules, DETREX_ENTRY[1], module)
    return module


def _dispatch_on_cpu_like_cuda(monkeypatch, candidates):
    """Let ``"auto"`` send CPU tensors to the compiled path (as it does CUDA tensors) with only ``candidates``."""
    monkeypatch.setattr(msda, "COMPILED_DEVICE_TYPES", ("cpu",))
    monkeypatch.setattr(msda, "COMPILED_CANDIDATES", tuple(candidates))
    monkeypatch.delenv(msda.ENV_VAR, raising=False)


def _msda_warnings(caplog):
    return [r for r in caplog.records if r.name == msda.__name__ and r.levelno >= logging.WARNING]


def test_current_detrex_without_C_is_reproduced_and_falls_back_with_one_warning(monkeypatch, caplog,
                                                                               fresh_kernel_lookup):
    module = _install_current_detrex_stand_in(monkeypatch)
    spatial, value, loc, attn = random_inputs(1, 5, 2, 4, [(3, 4), (2, 2)], num_points=2)
    starts = torch.tensor([0, 12])
    # The stand-in imports fine and fails only when called: what the first CUDA forward met before the probe.
    with pytest.raises(NameError, match="name '_C' is not defined"):
        module.MultiScaleDeformableAttnFunction.apply(value, spatial, starts, loc, attn, 64)

    _dispatch_on_cpu_like_cuda(monkeypatch, [DETREX_ENTRY])
    layer, shapes, query, pos, val, refs = _layer_and_inputs(4, seed=5)
    with caplog.at_level(logging.WARNING, logger=msda.__name__):
        out = layer(query, value=val, query_pos=pos, reference_points=refs, spatial_shapes=shapes)
        out_again = layer(query, value=val, query_pos=pos, reference_points=refs, spatial_shapes=shapes)
    warnings_ = _msda_warnings(caplog)
    assert len(warnings_) == 1
    assert "detrex" in warnings_[0].getMessage() and "NameError" in warnings_[0].getMessage()
    assert "_C" in warnings_[0].getMessage()
    assert msda.get_compiled_kernel("cpu") is None and msda.compiled_kernel_name("cpu") is None
    msda.set_implementation("fast")
    try:
        expected = layer(query, value=val, query_pos=pos, reference_points=refs, spatial_shapes=shapes)
    finally:
        msda.set_implementation(None)
    assert torch.equal(out, expected) and torch.equal(out_again, expected)
    # "compiled" asked for explicitly names the failure instead of a bare "not found"
    monkeypatch.setenv(msda.ENV_VAR, "compiled")
    with pytest.raises(RuntimeError, match="NameError"):
        msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)


def test_old_detrex_importing_C_at_the_top_falls_back_with_one_warning(monkeypatch, tmp_path, caplog,
                                                                       fresh_kernel_lookup):
    # Older detrex fails at import (ImportError from inside the installed package): the stand-in is a real
    # package on sys.path, because a module whose import fails never gets into sys.modules.
    pkg = tmp_path / "detrex"
    (pkg / "layers").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers" / "__init__.py").write_text("")
    (pkg / "layers" / "multi_scale_deform_attn.py").write_text(_OLD_DETREX_HEAD + _DETREX_FUNCTION_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("detrex", "detrex.layers", DETREX_ENTRY[1]):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match="_C"):
        importlib.import_module(DETREX_ENTRY[1])
    for name in [n for n in sys.modules if n == "detrex" or n.startswith("detrex.")]:
        monkeypatch.delitem(sys.modules, name)

    _dispatch_on_cpu_like_cuda(monkeypatch, [DETREX_ENTRY])
    spatial, value, loc, attn = random_inputs(1, 5, 2, 4, [(3, 4), (2, 2)], num_points=2)
    with caplog.at_level(logging.WARNING, logger=msda.__name__):
        out = msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
        msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    warnings_ = _msda_warnings(caplog)
    assert len(warnings_) == 1 and "import failed (ImportError" in warnings_[0].getMessage()
    assert torch.equal(out, multi_scale_deformable_attn_fast(value, spatial, loc, attn))
    for name in [n for n in sys.modules if n == "detrex" or n.startswith("detrex.")]:
        monkeypatch.delitem(sys.modules, name)


class _ReferenceAsKernel(torch.autograd.Function):
    """A stand-in compiled kernel that is right: the reference, with the compiled signature (scaled by ``gain``
    to make a wrong one)."""

    calls = 0
    gain = 1.0

    @staticmethod
    def forward(ctx, value, shapes, starts, loc, attn, im2col_step):
        _ReferenceAsKernel.calls += 1
        ctx.save_for_backward(value, shapes, loc, attn)
        with torch.no_grad():
            return multi_scale_deformable_attn_pytorch(value, shapes, loc, attn) * _ReferenceAsKernel.gain

    @staticmethod
    def backward(ctx, grad):
        value, shapes, loc, attn = ctx.saved_tensors
        leaves = [t.detach().requires_grad_() for t in (value, loc, attn)]
        with torch.enable_grad():
            out = multi_scale_deformable_attn_pytorch(leaves[0], shapes, leaves[1], leaves[2])
            grads = torch.autograd.grad(out * _ReferenceAsKernel.gain, leaves, grad)
        return grads[0], None, None, grads[1], grads[2], None


@pytest.mark.parametrize("gain", [1.0, 1.01])
def test_a_kernel_is_adopted_only_when_its_numbers_are_right(monkeypatch, caplog, fresh_kernel_lookup, gain):
    module = types.ModuleType("l2g_stand_in_kernel")
    module.MultiScaleDeformableAttnFunction = _ReferenceAsKernel
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(_ReferenceAsKernel, "calls", 0)
    monkeypatch.setattr(_ReferenceAsKernel, "gain", gain)
    missing = ("not-installed", "l2g_no_such_kernel_package.ops", "Function")
    stand_in = ("stand-in", module.__name__, "MultiScaleDeformableAttnFunction")
    _dispatch_on_cpu_like_cuda(monkeypatch, [missing, stand_in])
    spatial, value, loc, attn = random_inputs(2, 7, 2, 4, [(4, 5), (2, 3)], num_points=3, seed=4)
    with caplog.at_level(logging.WARNING, logger=msda.__name__):
        out = msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    if gain == 1.0:
        assert msda.compiled_kernel_name("cpu") == "stand-in"
        assert _ReferenceAsKernel.calls == 2  # the probe's call, then the real one
        assert not _msda_warnings(caplog)  # a candidate that is not installed is no reason to warn
        torch.testing.assert_close(out, multi_scale_deformable_attn_pytorch(value, spatial, loc, attn))
    else:
        assert msda.compiled_kernel_name("cpu") is None
        assert _ReferenceAsKernel.calls == 1  # the probe only
        (warning,) = _msda_warnings(caplog)
        assert "stand-in: probe on cpu failed (output differs" in warning.getMessage()
        assert "not-installed" not in warning.getMessage()
        assert torch.equal(out, multi_scale_deformable_attn_fast(value, spatial, loc, attn))


def test_probe_rejects_a_kernel_with_wrong_gradients():
    class WrongBackward(_ReferenceAsKernel):
        @staticmethod
        def backward(ctx, grad):
            grads = _ReferenceAsKernel.backward(ctx, grad)
            return (grads[0], None, None, grads[3] * 0, grads[4], None)

    assert msda.probe_kernel(_ReferenceAsKernel.apply, "cpu") is None
    reason = msda.probe_kernel(WrongBackward.apply, "cpu")
    assert reason is not None and reason.startswith("grad locations differs")
    assert msda.probe_kernel(lambda *a: 1 / 0, "cpu") == "ZeroDivisionError: division by zero"


def test_torch_ms_deform_attn_matches_the_reference_where_it_is_built(monkeypatch, fresh_kernel_lookup):
    """The maintained compiled candidate (PyPI ``torch-ms-deform-attn``, built from source against the installed
    torch): forward and gradients against the reference, on every device it has a kernel for here (CPU build
    here; the CUDA build in tests/test_cuda.py)."""
    tmsda = pytest.importorskip("torch_ms_deform_attn")
    entry = next(c for c in msda.COMPILED_CANDIDATES if c[0] == "torch-ms-deform-attn")
    assert msda.probe_kernel(tmsda.MSDeformAttnFunction.apply, "cpu") is None
    _dispatch_on_cpu_like_cuda(monkeypatch, [entry])
    shapes = [(12, 20), (6, 10), (3, 5), (2, 3)]
    spatial, value, loc, attn = random_inputs(2, 51, 4, 8, shapes, num_points=4, seed=3)
    loc = msda._off_pixel_centres(loc, shapes)  # gradients jump at pixel centres (see the function)
    upstream = torch.randn(2, 51, 32, generator=torch.Generator().manual_seed(9))
    results = {}
    for name in ("auto", "reference"):
        msda.set_implementation(name)
        try:
            leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
            out = msda.multi_scale_deformable_attn(leaves[0], spatial, None, leaves[1], leaves[2])
            (out * upstream).sum().backward()
            results[name] = [out.detach()] + [t.grad for t in leaves]
        finally:
            msda.set_implementation(None)
    assert msda.compiled_kernel_name("cpu") == "torch-ms-deform-attn"
    for got, ref in zip(results["auto"], results["reference"]):
        assert ref.abs().max() > 0
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_spatial_shapes_tensor_carries_its_host_copy_and_is_cached():
    spatial, starts = msda.spatial_shapes_tensor([(torch.tensor(6), 8), (3, 4), (2, 2)], "cpu")
    assert spatial.dtype == starts.dtype == torch.long
    assert spatial.tolist() == [[6, 8], [3, 4], [2, 2]] and starts.tolist() == [0, 48, 60]
    again, starts_again = msda.spatial_shapes_tensor(((6, 8), (3, 4), (2, 2)), torch.device("cpu"))
    assert again is spatial and starts_again is starts
    assert msda.host_spatial_shapes(spatial) == [(6, 8), (3, 4), (2, 2)]
    # a tensor built elsewhere is read back (the slow path), a sequence is taken as is
    assert msda.host_spatial_shapes(torch.tensor([[5, 7]])) == [(5, 7)]
    assert msda.host_spatial_shapes([(5, 7)]) == [(5, 7)]


def test_encoder_and_decoder_read_no_level_shape_back_from_the_device(monkeypatch, maskdino_reference_dir):
    """The pixel encoder's and the decoder's forward take the level sizes from the host copy: not one
    ``.tolist()`` / ``.item()`` (each a host synchronisation on CUDA) in the whole encoder + decoder step."""
    import json

    from detectron2.layers import ShapeSpec

    from local2global.modeling.segmenter.decoder import MaskDINODecoder
    from local2global.modeling.segmenter.pixel_decoder import MaskDINOEncoder

    cfg = json.loads((maskdino_reference_dir / "tiny_config.json").read_text())["resolved_config"]
    enc_kwargs = {k: v for k, v in cfg["sem_seg_head"]["pixel_decoder"].items() if k != "_target_"}
    enc_kwargs["input_shape"] = {name: ShapeSpec(channels=s["channels"], stride=s["stride"])
                                 for name, s in enc_kwargs["input_shape"].items()}
    dec_kwargs = {k: v for k, v in cfg["sem_seg_head"]["transformer_predictor"].items() if k != "_target_"}
    torch.manual_seed(0)
    encoder, decoder = MaskDINOEncoder(**enc_kwargs).eval(), MaskDINODecoder(**dec_kwargs).eval()
    size = 64
    features = {name: torch.randn(1, spec.channels, size // spec.stride, size // spec.stride)
                for name, spec in enc_kwargs["input_shape"].items()}
    reads = []
    for method in ("tolist", "item"):
        original = getattr(torch.Tensor, method)

        def counting(self, *args, _original=original, _method=method, **kwargs):
            reads.append((_method, tuple(self.shape)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counting)
    with torch.no_grad():
        mask_features, multi_scale = encoder.forward_features(features)
        bundle = decoder.prepare_memory(multi_scale)
        output_memory, _, coords = decoder.encode_tokens(bundle)
        num = 7
        out = decoder.decode(output_memory[:, :num], coords[:, :num].clamp(-5, 5), bundle, mask_features)
    assert out.pred_masks[-1].shape[:2] == (1, num)
    assert reads == []


def test_off_pixel_centres_moves_only_locations_on_a_centre():
    shapes = [(6, 10), (3, 5)]
    loc = torch.rand(1, 4, 2, 2, 3, 2, generator=torch.Generator().manual_seed(0))
    loc[0, 0, 0, 0, 0, 0] = 8.5 / 10  # x * W - 0.5 = 8: a centre of level 0
    loc[0, 1, 1, 1, 2, 1] = 0.5 / 3  # y * H - 0.5 = 0: a centre of level 1
    moved = msda._off_pixel_centres(loc, shapes)
    changed = (moved != loc).nonzero().tolist()
    assert changed == [[0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 2, 1]]
    assert moved[0, 0, 0, 0, 0, 0] * 10 - 0.5 == pytest.approx(8 + 2 * msda._CENTRE_MARGIN, abs=1e-5)


def test_compiled_on_a_cpu_tensor_uses_a_kernel_that_passes_there_or_names_why_not(monkeypatch, fresh_kernel_lookup):
    monkeypatch.setattr(msda, "COMPILED_CANDIDATES", (("not-installed", "l2g_no_such_kernel_package", "F"),))
    monkeypatch.setenv(msda.ENV_VAR, "compiled")
    spatial, value, loc, attn = random_inputs(1, 5, 2, 4, [(3, 4), (2, 2)], num_points=2)
    with pytest.raises(RuntimeError, match="none of not-installed is installed"):
        msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    msda._reset_compiled_lookup()
    module = types.ModuleType("l2g_stand_in_kernel")
    module.F = _ReferenceAsKernel
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(msda, "COMPILED_CANDIDATES", (("stand-in", module.__name__, "F"),))
    monkeypatch.setattr(_ReferenceAsKernel, "calls", 0)
    monkeypatch.setattr(_ReferenceAsKernel, "gain", 1.0)
    out = msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    assert _ReferenceAsKernel.calls == 2 and msda.compiled_kernel_name("cpu") == "stand-in"
    torch.testing.assert_close(out, multi_scale_deformable_attn_pytorch(value, spatial, loc, attn))
    monkeypatch.setenv(msda.ENV_VAR, "auto")  # "auto" keeps CPU tensors on the PyTorch path
    msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    assert _ReferenceAsKernel.calls == 2

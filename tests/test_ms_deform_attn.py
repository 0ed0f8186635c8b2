"""Multi-scale deformable attention: reference vs a naive bilinear loop, fast path vs reference, the layer."""

import math

import pytest
import torch

from local2global.modeling import ms_deform_attn as msda
from local2global.modeling.ms_deform_attn import (
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


def test_implementation_switch_and_compiled_hook(monkeypatch):
    calls = []
    monkeypatch.setattr(msda, "multi_scale_deformable_attn_pytorch",
                        lambda *a: calls.append("reference") or multi_scale_deformable_attn_pytorch(*a))
    monkeypatch.setattr(msda, "multi_scale_deformable_attn_fast",
                        lambda *a: calls.append("fast") or multi_scale_deformable_attn_fast(*a))
    kernel_calls = []
    monkeypatch.setattr(msda, "_compiled_kernel", lambda *a: kernel_calls.append(1))
    monkeypatch.setattr(msda, "_compiled_lookup_done", True)
    spatial, value, loc, attn = random_inputs(1, 3, 2, 4, [(3, 4), (2, 2)], num_points=2)

    monkeypatch.delenv(msda.ENV_VAR, raising=False)
    assert msda.get_implementation() == "auto"
    msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    assert calls[-1] == msda.DEFAULT_PYTORCH_IMPL and not kernel_calls  # CPU: compiled kernel never used
    monkeypatch.setenv(msda.ENV_VAR, "reference")
    msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
    assert calls[-1] == "reference"
    monkeypatch.setenv(msda.ENV_VAR, "compiled")
    with pytest.raises(RuntimeError, match="compiled"):
        msda.multi_scale_deformable_attn(value, spatial, None, loc, attn)
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

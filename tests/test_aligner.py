"""L2G-aligner: parameter counts (SPEC §3), attention semantics, l_pos modes, gradients."""

import pytest
import torch

from local2global.modeling.aligner import L2GAligner

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("ffn,expected", [(512, 2_372_352), (1024, 3_160_320), (2048, 4_736_256)])
def test_layer_parameter_counts_match_paper(ffn, expected):
    # Per layer: 2 x MHA (4*d*d + 4*d) + FFN (d*F + F + F*d + d) + 3 LayerNorms (2*d each), d = 256.
    d = 256
    per_layer = 2 * (4 * d * d + 4 * d) + (d * ffn + ffn + ffn * d + d) + 3 * 2 * d
    assert per_layer * 3 == expected
    aligner = L2GAligner(dim_feedforward=ffn)
    assert aligner.layer_parameter_count() == expected
    # l_pos (static, K x d) is counted separately.
    total = sum(p.numel() for p in aligner.parameters())
    assert total == expected + 300 * d


def _inputs(b=2, n=5, k=7, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, m, d, generator=g) for m in (n, k, n, k)]


def test_output_depends_on_local_queries_and_keeps_slot_order():
    torch.manual_seed(0)
    aligner = L2GAligner(d_model=32, nhead=4, num_layers=2, dim_feedforward=64, num_local_queries=7).eval()
    qg, ql, gp, _ = _inputs()
    out = aligner(qg, ql, gp)
    assert out.shape == qg.shape
    # Changing the local queries changes the output (cross-attention is used) ...
    out2 = aligner(qg, ql + 1.0, gp)
    assert (out - out2).abs().max() > 1e-3
    # ... and permuting the global slots permutes the output the same way (no slot mixing in the order).
    perm = torch.tensor([3, 0, 4, 1, 2])
    out_perm = aligner(qg[:, perm], ql, gp[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)


def test_static_and_dynamic_local_pos():
    torch.manual_seed(0)
    qg, ql, gp, lp = _inputs()
    static = L2GAligner(d_model=32, nhead=4, num_layers=1, dim_feedforward=64, num_local_queries=7).eval()
    assert static.local_pos_embed.weight.shape == (7, 32)
    # Static: an l_pos passed in is ignored, the rank-indexed table is used.
    torch.testing.assert_close(static(qg, ql, gp, lp), static(qg, ql, gp, None))
    dynamic = L2GAligner(d_model=32, nhead=4, num_layers=1, dim_feedforward=64, local_pos="dynamic").eval()
    assert dynamic.local_pos_embed is None and dynamic.needs_dynamic_local_pos
    with pytest.raises(ValueError, match="dynamic"):
        dynamic(qg, ql, gp, None)
    assert (dynamic(qg, ql, gp, lp) - dynamic(qg, ql, gp, lp * 2)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="local_pos"):
        L2GAligner(local_pos="learned")


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    aligner = L2GAligner(d_model=32, nhead=4, num_layers=2, dim_feedforward=64, num_local_queries=7)
    qg, ql, gp, _ = _inputs()
    aligner(qg, ql, gp).square().mean().backward()
    for name, p in aligner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

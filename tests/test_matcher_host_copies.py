"""HungarianMatcher: one device-to-host copy per batch (solve_batch) with the per-image assignments unchanged."""

import pytest
import torch

from local2global.modeling.criteria.matcher import HungarianMatcher

pytestmark = pytest.mark.timeout(60)


def test_solve_batch_equals_solve_per_image_including_empty_and_bf16():
    gen = torch.Generator().manual_seed(0)
    costs = [torch.randn(6, 3, generator=gen), torch.randn(6, 0), torch.randn(6, 5, generator=gen).bfloat16(),
             torch.randn(6, 1, generator=gen)]
    got = HungarianMatcher.solve_batch(costs)
    assert len(got) == len(costs)
    for cost, (rows, cols) in zip(costs, got):
        ref_rows, ref_cols = HungarianMatcher.solve(cost)
        assert rows.dtype == cols.dtype == torch.int64
        assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)
        assert len(rows) == min(cost.shape)
    assert HungarianMatcher.solve_batch([]) == []


def test_forward_copies_to_the_host_once_per_batch(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    batch, num_queries, num_classes = 3, 8, 4
    outputs = {"pred_logits": torch.randn(batch, num_queries, num_classes, generator=gen),
               "pred_masks": torch.randn(batch, num_queries, 8, 8, generator=gen),
               "pred_boxes": torch.rand(batch, num_queries, 4, generator=gen) * 0.5 + 0.25}
    targets = []
    for m in (2, 0, 3):
        targets.append({"labels": torch.randint(0, num_classes, (m,), generator=gen),
                        "masks": torch.rand(m, 16, 16, generator=gen) > 0.5,
                        "boxes": torch.rand(m, 4, generator=gen) * 0.5 + 0.25})
    matcher = HungarianMatcher(num_points=None)
    expected = [HungarianMatcher.solve(matcher.cost_matrix(outputs["pred_logits"][b], outputs["pred_masks"][b],
                                                           outputs["pred_boxes"][b], t["labels"], t["masks"],
                                                           t["boxes"]))
                for b, t in enumerate(targets)]
    copies = []
    original = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(self.shape) or original(self, *a, **k))
    got = matcher(outputs, targets)
    assert len(copies) == 1 and copies[0] == (num_queries * (2 + 0 + 3),)
    for (rows, cols), (ref_rows, ref_cols) in zip(got, expected):
        assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)
    assert [len(r) for r, _ in got] == [2, 0, 3]

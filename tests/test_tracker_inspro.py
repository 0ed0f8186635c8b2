"""InsPro-style propagation (``trackers/inspro.py``) and the box de-duplication loss (``criteria/box_dedup.py``).

The model tests run ``configs/trackers/inspro_tiny_synthetic.py``'s model (d = 64, 20 slots) on CPU with the clip
and video builders of ``tests/test_model.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from local2global.modeling.criteria import BoxDedupLoss, box_dedup_per_gt
from local2global.modeling.trackers import InsProState, InsProTracker, state_nbytes
from local2global.modeling.trackers.inspro import IntraQueryAttention
from test_model import make_clip, make_video

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "trackers" / "inspro_tiny_synthetic.py"
NUM_QUERIES, HIDDEN, NUM_CLASSES, BANK = 20, 64, 3, 18


def build(**tracker_overrides):
    cfg = LazyConfig.load(str(CONFIG))
    cfg.model.num_classes = NUM_CLASSES
    for k, v in tracker_overrides.items():
        setattr(cfg.model.tracker, k, v)
    torch.manual_seed(0)
    return instantiate(cfg.model)


# ---------------------------------------------------------------------------------------------- the module
def test_parameter_counts_at_d256():
    assert InsProTracker(num_queries=300, hidden_dim=256).extra_parameter_count() == 256 + 1
    assert InsProTracker(num_queries=300, hidden_dim=256, score_hidden=256).extra_parameter_count() == \
        256 * 256 + 256 + 256 + 1
    learned = InsProTracker(num_queries=300, hidden_dim=256, first_frame="learned")
    assert learned.extra_parameter_count() == 257  # the learned first-frame pairs are not the tracker's figure
    assert sum(p.numel() for p in learned.parameters()) == 257 + 300 * 256 + 300 * 4


def test_intra_query_attention_is_eq1_per_slot():
    torch.manual_seed(0)
    attn = IntraQueryAttention(4)
    bank = torch.randn(1, 2, 3, 4)
    filled = torch.tensor([False, True, True])
    cur = bank[:, :, -1]
    out = attn(bank, filled, cur)
    w, b = attn.score.weight[0], attn.score.bias[0]
    for i in range(2):
        scores = torch.stack([bank[0, i, n] @ w + b for n in (1, 2)])
        expected = (scores.softmax(0)[:, None] * bank[0, i, 1:]).sum(0) + cur[0, i]
        torch.testing.assert_close(out[0, i], expected)
    # an empty entry has no weight whatever it holds
    bank2 = bank.clone()
    bank2[:, :, 0] = 1e6
    torch.testing.assert_close(attn(bank2, filled, cur), out)


# ---------------------------------------------------------------------------------------------- in the model
def _run_frames(model, frames, size):
    states = []
    state = None
    model.postprocessor.reset()
    for i, frame in enumerate(frames):
        state, _ = model.process_frame(state, frame, size, frame_index=i, store=False)
        states.append(state)
    return states


def test_state_shapes_frame0_and_bank_shift():
    model = build(bank_size=3)
    model.eval()
    frames = make_video(5, 64, 64)["frames"]
    states = _run_frames(model, frames, (64, 64))
    s0 = states[0]
    assert isinstance(s0, InsProState)
    assert s0.queries.shape == (1, NUM_QUERIES, HIDDEN) and s0.boxes.shape == (1, NUM_QUERIES, 4)
    assert s0.bank.shape == (1, NUM_QUERIES, 3, HIDDEN)
    assert [s.count for s in states] == [1, 2, 3, 3, 3]
    # frame 0: the bank holds o_0 only, so q_0 = softmax(one entry) o_0 + o_0 = 2 o_0
    torch.testing.assert_close(s0.queries, 2 * s0.bank[:, :, -1])
    assert torch.all(s0.bank[:, :, :-1] == 0)
    # the buffer shifts: the newest output is appended, the oldest falls out (T = 3)
    newest = [s.bank[:, :, -1] for s in states]
    torch.testing.assert_close(states[4].bank, torch.stack(newest[2:5], dim=2))
    assert all(bool((s.boxes >= 0).all() and (s.boxes <= 1).all()) for s in states)
    # frame t's queries are Eq. 1 on its bank
    s = states[4]
    expected = model.tracker.intra_query(s.bank, torch.ones(3, dtype=torch.bool), s.bank[:, :, -1])
    torch.testing.assert_close(s.queries, expected)


def test_training_outputs_losses_and_gradients():
    model = build()
    model.train()
    clips = [make_clip(3, seed=0), make_clip(3, seed=1, video_id=2)]
    losses = model(clips)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou", "loss_dedup"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    grad = model.tracker.intra_query.score.weight.grad
    assert grad is not None and grad.abs().sum().item() > 0  # eps is trained through the propagated queries
    dec_grad = [p.grad for p in model.decoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in dec_grad)


def test_online_property():
    model = build()
    model.eval()
    frames = make_video(6)["frames"]
    full = list(model.iter_video(frames, (64, 64)))
    prefix = list(model.iter_video(frames[:4], (64, 64)))
    assert len(full) == 6 and len(prefix) == 4
    for a, b in zip(full[:4], prefix):
        assert torch.equal(a.track_ids, b.track_ids)
        torch.testing.assert_close(a.scores, b.scores)
        assert torch.equal(a.masks, b.masks)
    (out,) = model([make_video(6)])
    assert len(out["scores"]) == 10 and all(len(s) == 6 for s in out["segmentations"])


@pytest.mark.slow
def test_state_size_flat_over_50_vs_500_frames():
    model = build()
    model.eval()
    frame = make_video(1, 32, 32)["frames"][0]
    sizes, state = {}, None
    model.postprocessor.reset()
    for i in range(500):
        state, _ = model.process_frame(state, frame, (32, 32), frame_index=i, store=False)
        if i + 1 in (50, 500):
            sizes[i + 1] = (state_nbytes(state), state.count)
    assert sizes[50] == sizes[500]
    assert sizes[50][0] == 4 * (NUM_QUERIES * HIDDEN + NUM_QUERIES * 4 + NUM_QUERIES * BANK * HIDDEN)
    assert sizes[50][1] == BANK


@pytest.mark.slow
def test_loss_decreases_when_overfitting_one_clip():
    cfg = LazyConfig.load(str(CONFIG))
    cfg.model.num_classes = NUM_CLASSES
    cfg.model.criterion.reduced_supervision = False
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    model.train()
    clip = make_clip(3, seed=4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(30):
        total = sum(model([clip]).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.6 * first, history


# ---------------------------------------------------------------------------------------------- de-dup loss
def _dedup_case(first_frame=0):
    """One clip, 2 frames, one track on slot 0; slots 1-3 are the other predictions."""
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2],     # slot 0: the matched prediction (on the box)
                         [0.52, 0.5, 0.2, 0.2],    # slot 1: a near duplicate
                         [0.5, 0.56, 0.1, 0.1],    # slot 2: overlapping, smaller
                         [0.9, 0.9, 0.1, 0.1]])    # slot 3: far away (IoU 0)
    pred = pred[None].clone().requires_grad_(True)
    outputs = [{"pred_boxes": pred}, {"pred_boxes": pred}]
    targets = [[{"labels": torch.tensor([0]), "boxes": gt, "valid": torch.tensor([first_frame <= t])}
                for t in range(2)]]
    assignment = {"slots": [torch.tensor([0])], "first_frame": [torch.tensor([first_frame])],
                  "supervised": torch.tensor([[False, True]]), "num_masks": 1.0}
    return outputs, targets, assignment, pred


def test_dedup_loss_equals_hand_computed_value():
    # D^2 = 0.2^2 + 0.2^2 = 0.08; slot 1: C^2 = 0.02^2 -> 0.1 - 0.005 = 0.095; slot 2: C^2 = 0.06^2 -> 0.1 - 0.045
    # = 0.055; slot 3: C^2 = 0.32 -> 4.0 -> 0. IoUs: slot 1 0.18/0.22, slot 2 0.25, slot 3 0.
    outputs, targets, assignment, pred = _dedup_case()
    loss = BoxDedupLoss(k=5)(outputs, targets, assignment)["loss_dedup"]
    torch.testing.assert_close(loss, torch.tensor((0.095 + 0.055 + 0.0) / 3))  # 3 negatives < k = 5
    loss2 = BoxDedupLoss(k=2, weight=2.0)(outputs, targets, assignment)["loss_dedup"]
    torch.testing.assert_close(loss2, torch.tensor(2.0 * (0.095 + 0.055) / 2))  # the two largest IoUs
    loss1 = BoxDedupLoss(k=1)(outputs, targets, assignment)["loss_dedup"]
    torch.testing.assert_close(loss1, torch.tensor(0.095))  # slot 1 has the largest IoU
    # gradients push the duplicates' centres away from the box and leave the matched slot alone
    loss.backward()
    g = pred.grad[0]
    assert g[0].abs().sum() == 0 and g[3].abs().sum() == 0
    assert g[1, 0] < 0 and g[2, 1] < 0  # descending the loss moves slot 1 right and slot 2 down (away)
    assert torch.all(g[:, 2:] == 0)


def test_dedup_unmatched_means_not_bound_to_a_seen_track():
    # the track first appears at frame 1: on frame 0 it is invalid (no gt term); if frame 0 were supervised it
    # would contribute nothing, and on frame 1 slot 0 is matched
    outputs, targets, assignment, _ = _dedup_case(first_frame=1)
    assignment["supervised"] = torch.tensor([[True, True]])
    loss = BoxDedupLoss(k=5)(outputs, targets, assignment)["loss_dedup"]
    torch.testing.assert_close(loss, torch.tensor((0.095 + 0.055) / 3))
    # per-gt helper: slot 0 among the negatives (as on a frame before the track is bound) adds its 0.1
    gt = targets[0][1]["boxes"]
    per = box_dedup_per_gt(gt, outputs[0]["pred_boxes"][0].detach(), k=5)
    torch.testing.assert_close(per, torch.tensor([(0.1 + 0.095 + 0.055 + 0.0) / 4]))
    # no ground-truth box at all: zero, still in the graph
    empty = box_dedup_per_gt(torch.zeros(0, 4), outputs[0]["pred_boxes"][0], k=5)
    assert empty.shape == (0,)


def test_dedup_aux_stages_and_bank_capacity_switch():
    outputs, targets, assignment, pred = _dedup_case()
    far = torch.full_like(pred, 0.9)
    for o in outputs:
        o["aux_outputs"] = [{"pred_boxes": pred}, {"pred_boxes": far}]
    losses = BoxDedupLoss(k=5, aux=True)(outputs, targets, assignment)
    assert set(losses) == {"loss_dedup", "loss_dedup_0", "loss_dedup_1"}
    torch.testing.assert_close(losses["loss_dedup_0"], losses["loss_dedup"])
    assert losses["loss_dedup_1"].item() == 0.0  # every box far from the ground truth
    # training capacity below the inference bank: the newest entries are kept when the mode switches
    tracker = InsProTracker(num_queries=2, hidden_dim=4, bank_size=4, train_bank_size=2)
    assert tracker.train().capacity == 2 and tracker.eval().capacity == 4
    from local2global.modeling.trackers.inspro import _resize_bank

    bank = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    small, count = _resize_bank(bank, 3, 2)
    assert count == 2 and torch.equal(small, bank[:, :, 2:])
    big, count = _resize_bank(small, 2, 4)
    assert count == 2 and torch.equal(big[:, :, 2:], small) and torch.all(big[:, :, :2] == 0)

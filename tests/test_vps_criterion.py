"""Panoptic mode of the matcher and the criteria: no box cost and no box loss for stuff targets.

Instance targets (no ``is_thing`` key) must give exactly the previous numbers; ``is_thing`` all True too.
"""

import torch

from local2global.modeling.criteria.set_criterion import SetCriterion
from local2global.modeling.criteria.matcher import HungarianMatcher, neutralize_stuff_columns
from local2global.modeling.criteria.video_criterion import VideoSetCriterion

B, T, N, C, H, W = 2, 3, 6, 5, 8, 12


def test_neutralize_stuff_columns_hand_values():
    cost = torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, -7.0]])
    out = neutralize_stuff_columns(cost, torch.tensor([True, True, False]))
    assert out.tolist() == [[1.0, 2.0, 2.5], [3.0, 4.0, 2.5]]  # mean of the thing columns: 10 / 4
    # no thing target: MaskDINO's NaN -> 0
    assert neutralize_stuff_columns(cost, torch.tensor([False, False, False])).tolist() == [[0.0] * 3] * 2
    # all things: the same tensor values, untouched
    assert torch.equal(neutralize_stuff_columns(cost, torch.ones(3, dtype=torch.bool)), cost)


def _frame_outputs(gen):
    def stage():
        return {"pred_logits": torch.randn(B, N, C, generator=gen, requires_grad=True),
                "pred_masks": torch.randn(B, N, H, W, generator=gen, requires_grad=True),
                "pred_boxes": torch.rand(B, N, 4, generator=gen).mul(0.5).add(0.25).requires_grad_()}

    out = stage()
    out["aux_outputs"] = [stage()]
    out["interm_outputs"] = stage()
    return out


def _box(gen, n):
    cxcy = torch.rand(n, 2, generator=gen) * 0.5 + 0.25
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.1
    return torch.cat([cxcy, wh], 1)


def _targets(gen, stuff_boxes=None, with_flags=True, all_things=False):
    """Per clip 4 tracks: 2 things (one absent on frame 1), 2 stuff (labels 3 and 4)."""
    clips = []
    for b in range(B):
        frames = []
        for t in range(T):
            masks = torch.rand(4, H, W, generator=gen) > 0.6
            valid = torch.tensor([True, t != 1, True, True])
            masks[~valid] = False
            boxes = _box(gen, 4)
            if stuff_boxes is not None:
                boxes[2:] = stuff_boxes[b][t]
            tgt = {"labels": torch.tensor([0, 1, 3, 4]), "masks": masks, "boxes": boxes, "valid": valid,
                   "ids": torch.tensor([10, 11, 1003, 1004])}
            if with_flags:
                tgt["is_thing"] = torch.tensor([True, True, all_things, all_things])
            frames.append(tgt)
        clips.append(frames)
    return clips


def _criterion():
    matcher = HungarianMatcher(num_points=None)
    set_crit = SetCriterion(num_classes=C, matcher=matcher, num_points=None, dec_layers=2)
    return VideoSetCriterion(set_crit, reduced_supervision=True)


def _losses(targets, seed=0):
    outputs = [_frame_outputs(torch.Generator().manual_seed(100 + t)) for t in range(T)]
    crit = _criterion()
    losses = crit(outputs, targets, generator=seed)
    return losses, crit.last_assignment


def _same_targets(**kw):
    return _targets(torch.Generator().manual_seed(7), **kw)


def test_instance_targets_bit_identical_with_all_thing_flags():
    plain, a_plain = _losses(_same_targets(with_flags=False))
    flagged, a_flag = _losses(_same_targets(with_flags=True, all_things=True))
    assert plain.keys() == flagged.keys() and "loss_bbox_interm" in plain
    for k in plain:
        assert torch.equal(plain[k], flagged[k]), k
    for s, f in zip(a_plain["slots"], a_flag["slots"]):
        assert torch.equal(s, f)


def test_stuff_boxes_change_nothing_in_panoptic_mode():
    """Matching and every loss are independent of the stuff targets' boxes; in instance mode they are not."""
    g = torch.Generator().manual_seed(3)
    boxes_a = [[_box(g, 2) for _ in range(T)] for _ in range(B)]
    boxes_b = [[_box(g, 2) for _ in range(T)] for _ in range(B)]
    pan_a, asg_a = _losses(_same_targets(stuff_boxes=boxes_a))
    pan_b, asg_b = _losses(_same_targets(stuff_boxes=boxes_b))
    for k in pan_a:
        assert torch.equal(pan_a[k], pan_b[k]), k
    inst_a, _ = _losses(_same_targets(stuff_boxes=boxes_a, with_flags=False))
    inst_b, _ = _losses(_same_targets(stuff_boxes=boxes_b, with_flags=False))
    assert not torch.equal(inst_a["loss_bbox"], inst_b["loss_bbox"])
    # stuff still gets class and mask losses: its tracks are matched to slots like things
    assert all(bool((s >= 0).all()) for s in asg_a["slots"])


def test_set_criterion_box_loss_counts_thing_pairs_only():
    crit = SetCriterion(num_classes=C, matcher=HungarianMatcher(num_points=None), num_points=None, dec_layers=1)
    pred = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.4, 0.4, 0.4, 0.4], [0.6, 0.6, 0.2, 0.2]]])
    tgt = {"labels": torch.tensor([0, 3]), "boxes": torch.tensor([[0.5, 0.6, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]),
           "is_thing": torch.tensor([True, False])}
    indices = [(torch.tensor([0, 2]), torch.tensor([0, 1]))]
    out = crit.loss_boxes({"pred_boxes": pred}, [tgt], indices, num_boxes=2.0)
    # only the thing pair (query 0 -> target 0): L1 = 0.1; normaliser 2 (all instances, as MaskDINO)
    assert abs(out["loss_bbox"].item() - 0.1 / 2) < 1e-7
    # GIoU of two 0.2 x 0.2 boxes offset by 0.1 vertically: inter 0.02, union 0.06, hull 0.06 -> 1/3
    # (MaskDINO's +1e-6 in the divisions moves it by ~3e-6)
    assert abs(out["loss_giou"].item() - (1 - 1 / 3) / 2) < 1e-5
    tgt_inst = {k: v for k, v in tgt.items() if k != "is_thing"}
    both = crit.loss_boxes({"pred_boxes": pred}, [tgt_inst], indices, num_boxes=2.0)
    assert both["loss_bbox"].item() > out["loss_bbox"].item()


def test_matcher_box_cost_of_stuff_is_the_things_mean():
    g = torch.Generator().manual_seed(5)
    logits, masks, boxes = torch.randn(N, C, generator=g), torch.randn(N, H, W, generator=g), _box(g, N)
    labels = torch.tensor([0, 1, 3])
    tmasks = torch.rand(3, H, W, generator=g) > 0.5
    tboxes = _box(g, 3)
    m = HungarianMatcher(num_points=None)
    plain = m.cost_terms(logits, masks, boxes, labels, tmasks, tboxes)
    pan = m.cost_terms(logits, masks, boxes, labels, tmasks, tboxes, tgt_is_thing=torch.tensor([True, True, False]))
    for key in ("cost_bbox", "cost_giou"):
        assert torch.equal(pan[key][:, :2], plain[key][:, :2])
        torch.testing.assert_close(pan[key][:, 2], plain[key][:, :2].mean().expand(N))
    for key in ("cost_class", "cost_mask", "cost_dice"):
        assert torch.equal(pan[key], plain[key])
    # forward() reads the flag from the target dict
    out = {"pred_logits": logits[None], "pred_masks": masks[None], "pred_boxes": boxes[None]}
    tgt = {"labels": labels, "masks": tmasks, "boxes": tboxes, "is_thing": torch.tensor([True, True, False])}
    total = m.combine(pan, N)
    rows, cols = m(out, [tgt])[0]
    ref_rows, ref_cols = m.solve(total)
    assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)

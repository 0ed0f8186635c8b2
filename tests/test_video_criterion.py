"""VideoSetCriterion: match-once per track, per-frame targets, reduced supervision, normalisation."""

from collections import Counter

import numpy as np
import pytest
import torch

from local2global.modeling.criteria.set_criterion import SetCriterion
from local2global.modeling.criteria.matcher import HungarianMatcher
from local2global.modeling.criteria.video_criterion import VideoSetCriterion, sample_supervised_frames

pytestmark = pytest.mark.timeout(60)

N, C, H_PRED, H_IMG = 4, 3, 4, 16
HIGH, LOW = 5.0, -5.0
NUM_AUX = 2
TRACK_BOX = [0.5, 0.5, 0.4, 0.4]


def _stage(batch, gen, hot):
    """One stage output: all slots share masks and boxes, so only the class logits decide matching.

    ``hot``: list over clips of {slot: class} entries set to HIGH (others LOW).
    """
    logits = torch.full((batch, N, C), LOW)
    for b, entries in enumerate(hot):
        for slot, cls in entries.items():
            logits[b, slot, cls] = HIGH
    masks = torch.randn(batch, 1, H_PRED, H_PRED, generator=gen).expand(-1, N, -1, -1).clone()
    boxes = torch.tensor([0.5, 0.5, 0.3, 0.3]).expand(batch, N, 4).clone()
    return {"pred_logits": logits, "pred_masks": masks, "pred_boxes": boxes}


def make_outputs(hot_per_frame, seed=0, interm=True):
    """T frame outputs; ``hot_per_frame[t]`` = list over clips of {slot: class} for the final layer."""
    gen = torch.Generator().manual_seed(seed)
    outputs = []
    for hot in hot_per_frame:
        batch = len(hot)
        out = _stage(batch, gen, hot)
        out["aux_outputs"] = [_stage(batch, gen, hot) for _ in range(NUM_AUX)]
        if interm:
            out["interm_outputs"] = _stage(batch, gen, hot)
        outputs.append(out)
    return outputs


def make_targets(labels, valid, seed=1, garbage_when_absent=False):
    """One clip: ``labels`` (n,), ``valid`` (T, n) bools -> T target dicts."""
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for t, row in enumerate(valid):
        v = torch.tensor(row, dtype=torch.bool)
        masks = torch.rand(len(labels), H_IMG, H_IMG, generator=gen) > 0.5
        boxes = torch.tensor([TRACK_BOX] * len(labels))
        if not garbage_when_absent:
            masks[~v] = False
            boxes[~v] = 0.0
        frames.append({"labels": torch.tensor(labels), "masks": masks, "boxes": boxes, "valid": v,
                       "ids": torch.arange(len(labels)) + 10})
    return frames


def make_criterion(**kwargs):
    matcher = HungarianMatcher(num_points=None)
    set_crit = SetCriterion(C, matcher, num_points=None, dec_layers=NUM_AUX)
    return VideoSetCriterion(set_crit, matcher, **kwargs)


def expected_losses(crit, outputs, frame_targets, label_pairs, box_pairs, frames, num_masks, interm=True):
    """Single-clip reference: sum over ``frames`` of SetCriterion terms with hand-given pairs
    (``label_pairs[t]`` / ``box_pairs[t]`` lists of (slot, track)); weighted."""
    sc = crit.set_criterion
    total = {}

    def add(d, suffix):
        for k, v in d.items():
            total[k + suffix] = total.get(k + suffix, 0) + v

    for t in frames:
        tgt = dict(frame_targets[t])
        tgt["masks"] = tgt["masks"] & tgt["valid"][:, None, None]
        lp = [(torch.tensor([s for s, _ in label_pairs[t]], dtype=torch.int64),
               torch.tensor([j for _, j in label_pairs[t]], dtype=torch.int64))]
        bp = [(torch.tensor([s for s, _ in box_pairs[t]], dtype=torch.int64),
               torch.tensor([j for _, j in box_pairs[t]], dtype=torch.int64))]
        stages = [(outputs[t], "")] + [(a, f"_{i}") for i, a in enumerate(outputs[t]["aux_outputs"])]
        for out, suffix in stages:
            add(sc.loss_labels(out, [tgt], lp, num_masks), suffix)
            add(sc.loss_masks(out, [tgt], lp, num_masks), suffix)
            add(sc.loss_boxes(out, [tgt], bp, num_masks), suffix)
        if interm:
            keep = tgt["valid"]
            vt = [{k: tgt[k][keep] for k in ("labels", "masks", "boxes")}]
            out = outputs[t]["interm_outputs"]
            idx = sc.matcher(out, vt)
            add(sc.loss_labels(out, vt, idx, num_masks), "_interm")
            add(sc.loss_masks(out, vt, idx, num_masks), "_interm")
            add(sc.loss_boxes(out, vt, idx, num_masks), "_interm")
    return {k: v * sc.weight_dict[k] for k, v in total.items()}


def assert_losses_equal(got, expected):
    assert set(got) == set(expected)
    for k in expected:
        assert torch.allclose(got[k], torch.as_tensor(expected[k]), rtol=1e-5, atol=1e-6), k


# ----------------------------------------------------------------------------- matching
def test_track_matched_at_first_appearance_keeps_slot():
    # Track A (class 0) valid on all frames, B (class 1) appears at frame 1.
    # Frame 1: slot 1 is the best for class 1. Frame 2: slot 3 would be cheaper for B, slot 1 is cold.
    hot = [[{0: 0}], [{0: 0, 1: 1}], [{0: 0, 3: 1}]]
    outputs = make_outputs(hot)
    targets = [make_targets([0, 1], [[1, 0], [1, 1], [1, 1]])]
    crit = make_criterion(reduced_supervision=False)
    losses = crit(outputs, targets)
    info = crit.last_assignment
    assert info["slots"][0].tolist() == [0, 1]
    assert info["first_frame"][0].tolist() == [0, 1]
    assert info["supervised"].tolist() == [[True, True, True]]
    label_pairs = {0: [(0, 0)], 1: [(0, 0), (1, 1)], 2: [(0, 0), (1, 1)]}
    expected = expected_losses(crit, outputs, targets[0], label_pairs, label_pairs, [0, 1, 2], num_masks=5.0)
    assert info["num_masks"] == 5.0
    assert_losses_equal(losses, expected)
    # every decoder layer reuses the final-layer assignment, even where its own logits disagree
    outputs_aux = make_outputs(hot)
    for out in outputs_aux:
        for aux in out["aux_outputs"]:
            aux["pred_logits"] = aux["pred_logits"].flip(1)  # aux would prefer other slots
    losses_aux = crit(outputs_aux, targets)
    assert crit.last_assignment["slots"][0].tolist() == [0, 1]
    assert_losses_equal(losses_aux, expected_losses(crit, outputs_aux, targets[0], label_pairs, label_pairs,
                                                    [0, 1, 2], num_masks=5.0))


def test_taken_slots_are_excluded():
    # Slot 0 is the best slot for both classes; A takes it at frame 0, B (frame 1) must go to slot 2.
    hot = [[{0: 0}], [{0: 0, 2: 1}], [{0: 0}]]
    outputs = make_outputs(hot)
    for out in outputs:
        out["pred_logits"][0, 0, 1] = 2 * HIGH  # slot 0 is also (even more) class 1
    targets = [make_targets([0, 1], [[1, 0], [1, 1], [1, 1]])]
    crit = make_criterion(reduced_supervision=False)
    crit(outputs, targets)
    assert crit.last_assignment["slots"][0].tolist() == [0, 2]
    # sanity: without the exclusion, B (matched alone, as the new track of frame 1) would get slot 0
    (src, tgt), = crit.matcher({k: outputs[1][k] for k in ("pred_logits", "pred_masks", "pred_boxes")},
                               [{k: targets[0][1][k][1:] for k in ("labels", "masks", "boxes")}])
    assert src.tolist() == [0] and tgt.tolist() == [0]


def test_before_appearance_no_object_after_disappearance_label_kept():
    # A valid on frames 0, 1 then gone (garbage mask in the data is ignored); B appears at frame 1.
    hot = [[{0: 0}], [{0: 0, 1: 1}], [{1: 1}]]
    outputs = make_outputs(hot)
    targets = [make_targets([0, 1], [[1, 0], [1, 1], [0, 1]], garbage_when_absent=True)]
    crit = make_criterion(reduced_supervision=False)
    losses = crit(outputs, targets)
    assert crit.last_assignment["slots"][0].tolist() == [0, 1]
    # frame 0: B's slot (1) is not a target; frame 2: A's slot keeps label 0 + empty mask, no box
    label_pairs = {0: [(0, 0)], 1: [(0, 0), (1, 1)], 2: [(0, 0), (1, 1)]}
    box_pairs = {0: [(0, 0)], 1: [(0, 0), (1, 1)], 2: [(1, 1)]}
    assert crit.last_assignment["num_masks"] == 4.0
    assert_losses_equal(losses, expected_losses(crit, outputs, targets[0], label_pairs, box_pairs, [0, 1, 2], 4.0))
    # no-object before appearance is observable: frame 0 with B's slot labelled would differ
    wrong = expected_losses(crit, outputs, targets[0], {**label_pairs, 0: [(0, 0), (1, 1)]}, box_pairs,
                            [0, 1, 2], 4.0)
    assert not torch.allclose(losses["loss_ce"], wrong["loss_ce"])

    crit_flag = make_criterion(reduced_supervision=False, absent_as_no_object=True)
    losses_flag = crit_flag(outputs, targets)
    label_pairs_flag = {0: [(0, 0)], 1: [(0, 0), (1, 1)], 2: [(1, 1)]}
    assert_losses_equal(losses_flag,
                        expected_losses(crit, outputs, targets[0], label_pairs_flag, box_pairs, [0, 1, 2], 4.0))
    assert not torch.allclose(losses_flag["loss_ce"], losses["loss_ce"])


def test_box_loss_toggle_and_interm_toggle():
    hot = [[{0: 0}], [{0: 0}], [{0: 0}]]
    outputs = make_outputs(hot)
    targets = [make_targets([0], [[1], [1], [1]])]
    losses = make_criterion(reduced_supervision=False, box_loss=False, interm_loss=False)(outputs, targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    full = make_criterion(reduced_supervision=False)(outputs, targets)
    assert {"loss_bbox", "loss_giou_1", "loss_ce_interm", "loss_bbox_interm"} <= set(full)
    assert all(torch.isfinite(v) for v in full.values())


def test_eq4_override_set_keeps_final_layer_class_and_mask_terms_only():
    """The paper's Eq. 4 (deep_supervision, interm and box losses off): focal class + mask BCE + dice of the final
    layer per frame, each equal to the full criterion's final-layer term (same matching, same normalisation)."""
    hot = [[{0: 0, 2: 1}], [{0: 0, 2: 1}], [{0: 0, 2: 1}]]
    outputs = make_outputs(hot)
    targets = [make_targets([0, 1], [[1, 1], [1, 1], [1, 0]])]
    eq4 = make_criterion(reduced_supervision=False, box_loss=False, interm_loss=False, deep_supervision=False)
    losses = eq4(outputs, targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    no_box = make_criterion(reduced_supervision=False, box_loss=False, interm_loss=False)(outputs, targets)
    assert {"loss_ce_0", "loss_mask_1"} <= set(no_box)
    for k in losses:
        assert torch.equal(losses[k], no_box[k]), k
    assert all(v > 0 for v in losses.values())


# ----------------------------------------------------------------------------- reduced supervision
def test_supervision_draws_last_frame_always_k_uniform():
    T, draws = 5, 3000
    gen = torch.Generator().manual_seed(0)
    sup = sample_supervised_frames(draws, T, True, gen)
    assert bool(sup[:, -1].all())
    assert bool((sup.sum(1) >= 2).all())
    k = Counter((T - sup.sum(1)).tolist())
    assert set(k) == {1, 2, 3}
    for value in (1, 2, 3):
        assert abs(k[value] / draws - 1 / 3) < 0.04, k
    # skipped frames uniform among 0..T-2: each skipped with probability E[k] / (T-1) = 1/2
    skip_rate = (~sup[:, :-1]).float().mean(0)
    assert torch.all((skip_rate - 0.5).abs() < 0.04), skip_rate
    assert bool(sample_supervised_frames(7, 2, True, gen).all())
    assert bool(sample_supervised_frames(7, 4, False, gen).all())
    # reproducible from a seed, independent of the global RNG
    a = sample_supervised_frames(20, 6, True, torch.Generator().manual_seed(3))
    torch.manual_seed(99)
    b = sample_supervised_frames(20, 6, True, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def _skipped_seed(crit, batch, T, frame):
    """A seed whose supervision draw skips ``frame`` of clip 0."""
    for seed in range(100):
        if not sample_supervised_frames(batch, T, True, crit.resolve_generator(seed))[0, frame]:
            return seed
    raise AssertionError("no seed found")


def _leafify(outputs):
    def leaf(x):
        if isinstance(x, dict):
            return {k: leaf(v) for k, v in x.items()}
        if isinstance(x, list):
            return [leaf(v) for v in x]
        return x.detach().clone().requires_grad_(True)
    return leaf(outputs)


def test_skipped_frame_contributes_nothing_but_is_still_matched():
    T = 3
    hot = [[{0: 0}], [{0: 0, 1: 1}], [{0: 0, 3: 1}]]  # B appears at frame 1
    targets = [make_targets([0, 1], [[1, 0], [1, 1], [1, 1]])]
    crit = make_criterion(reduced_supervision=True)
    seed = _skipped_seed(crit, 1, T, 1)
    outputs = make_outputs(hot)
    losses = crit(outputs, targets, generator=seed)
    info = crit.last_assignment
    assert info["supervised"].tolist() == [[True, False, True]]
    assert info["slots"][0].tolist() == [0, 1]  # B matched on the skipped frame 1
    assert info["num_masks"] == 3.0  # 1 (frame 0) + 2 (frame 2)
    pairs = {0: [(0, 0)], 2: [(0, 0), (1, 1)]}
    assert_losses_equal(losses, expected_losses(crit, outputs, targets[0], pairs, pairs, [0, 2], 3.0))

    # perturbing the skipped frame's predictions (without changing who is cheapest) changes nothing
    perturbed = make_outputs(hot)
    for stage in [perturbed[1]] + perturbed[1]["aux_outputs"] + [perturbed[1]["interm_outputs"]]:
        stage["pred_masks"] = stage["pred_masks"] + 3.0
        stage["pred_boxes"] = stage["pred_boxes"] * 0.5
        stage["pred_logits"] = stage["pred_logits"] * 1.5
    losses_p = crit(perturbed, targets, generator=seed)
    assert crit.last_assignment["slots"][0].tolist() == [0, 1]
    assert_losses_equal(losses_p, losses)

    # ... but the matching does use it: make slot 2 the best for class 1 on frame 1 only
    rematched = make_outputs([[{0: 0}], [{0: 0, 2: 1}], [{0: 0, 3: 1}]])
    losses_r = crit(rematched, targets, generator=seed)
    assert crit.last_assignment["slots"][0].tolist() == [0, 2]
    pairs_r = {0: [(0, 0)], 2: [(0, 0), (2, 1)]}
    assert_losses_equal(losses_r, expected_losses(crit, rematched, targets[0], pairs_r, pairs_r, [0, 2], 3.0))
    # and it shows in the loss when the supervised frame 2 prefers the originally chosen slot
    hot_b = [[{0: 0}], [{0: 0, 1: 1}], [{0: 0, 1: 1}]]
    hot_b_re = [[{0: 0}], [{0: 0, 2: 1}], [{0: 0, 1: 1}]]
    loss_b = crit(make_outputs(hot_b), targets, generator=seed)["loss_ce"]
    loss_b_re = crit(make_outputs(hot_b_re), targets, generator=seed)["loss_ce"]
    assert loss_b_re.item() > loss_b.item() + 1.0


def test_gradients_reach_supervised_frames_only():
    T = 4
    hot = [[{0: 0}, {1: 2}]] * T
    targets = [make_targets([0], [[1]] * T, seed=2), make_targets([2], [[1]] * T, seed=3)]
    crit = make_criterion(reduced_supervision=True)
    outputs = _leafify(make_outputs(hot))
    losses = crit(outputs, targets, generator=np.random.default_rng(4))
    sup = crit.last_assignment["supervised"]
    assert bool(sup[:, -1].all()) and not bool(sup.all())
    sum(losses.values()).backward()
    for t in range(T):
        stages = [outputs[t]] + outputs[t]["aux_outputs"] + [outputs[t]["interm_outputs"]]
        for stage in stages:
            for key in ("pred_logits", "pred_masks", "pred_boxes"):
                grad = stage[key].grad
                for b in range(2):
                    g = torch.zeros(()) if grad is None else grad[b].abs().sum()
                    if sup[b, t]:
                        assert g.item() > 0, (t, b, key)
                    else:
                        assert g.item() == 0, (t, b, key)


def test_normalisation_counts_valid_instances_of_supervised_frames_over_batch():
    T = 4
    hot = [[{0: 0, 1: 1}, {2: 2}]] * T
    targets = [make_targets([0, 1], [[1, 1], [1, 0], [0, 1], [1, 1]], seed=5),
               make_targets([2], [[0], [1], [1], [1]], seed=6)]
    crit = make_criterion(reduced_supervision=True)
    crit(make_outputs(hot), targets, generator=11)
    info = crit.last_assignment
    sup = info["supervised"]
    expected = sum(int(targets[b][t]["valid"].sum()) for b in range(2) for t in range(T) if sup[b, t])
    assert info["num_masks"] == float(max(expected, 1))
    # doubling one supervised-frame instance count changes the normaliser accordingly
    all_sup = make_criterion(reduced_supervision=False)
    all_sup(make_outputs(hot), targets)
    assert all_sup.last_assignment["num_masks"] == 2 + 1 + 1 + 2 + 0 + 1 + 1 + 1


def test_empty_weight_is_top_level_state_dict_entry_and_generators_reproducible():
    crit = make_criterion()
    assert list(crit.state_dict()) == ["empty_weight"]
    assert crit.state_dict()["empty_weight"].shape == (C + 1,)
    hot = [[{0: 0}]] * 5
    targets = [make_targets([0], [[1]] * 5)]
    point_crit = VideoSetCriterion(SetCriterion(C, HungarianMatcher(num_points=50), num_points=50, dec_layers=NUM_AUX))
    a = point_crit(make_outputs(hot), targets, generator=torch.Generator().manual_seed(8))
    sup_a = point_crit.last_assignment["supervised"].clone()
    torch.manual_seed(1234)
    b = point_crit(make_outputs(hot), targets, generator=torch.Generator().manual_seed(8))
    assert torch.equal(sup_a, point_crit.last_assignment["supervised"])
    assert_losses_equal(a, b)


def test_seeded_criterion_rng_state_roundtrip():
    hot = [[{0: 0}]] * 6
    targets = [make_targets([0], [[1]] * 6)]
    crit = make_criterion(seed=3)
    crit(make_outputs(hot), targets)
    state = crit.get_rng_state()
    crit(make_outputs(hot), targets)
    first = crit.last_assignment["supervised"].clone()
    crit.set_rng_state(state)
    crit(make_outputs(hot), targets)
    assert torch.equal(first, crit.last_assignment["supervised"])


def test_dense_targets_resized_once_give_the_same_losses():
    """Resizing the dense-mode targets once per clip (``_targets_on_grid``) changes no loss, bit for bit."""
    hot = [[{0: 0, 2: 1}], [{0: 0, 1: 1}], [{0: 0, 3: 1}]]
    targets = [make_targets([0, 1], [[1, 0], [1, 1], [0, 1]], garbage_when_absent=True)]
    crit = make_criterion(reduced_supervision=False)
    on_grid = crit._targets_on_grid(targets, make_outputs(hot))
    assert on_grid[0][0]["masks"].shape == (2, H_PRED, H_PRED) and on_grid[0][0]["masks"].dtype == torch.float32
    cached = crit(make_outputs(hot), targets)
    crit._targets_on_grid = lambda t, o: t  # every stage resizes the full-resolution targets itself
    full = crit(make_outputs(hot), targets)
    assert list(cached) == list(full)
    for key in full:
        assert torch.equal(cached[key], full[key]), key


def test_point_mode_keeps_full_resolution_targets():
    matcher = HungarianMatcher(num_points=16)
    crit = VideoSetCriterion(SetCriterion(C, matcher, num_points=16, dec_layers=NUM_AUX), matcher)
    targets = [make_targets([0], [[1], [1]])]
    assert crit._targets_on_grid(targets, make_outputs([[{0: 0}], [{0: 0}]])) is targets


def test_stages_on_different_grids_keep_full_resolution_targets():
    hot = [[{0: 0}], [{0: 0}]]
    outputs = make_outputs(hot)
    outputs[1]["aux_outputs"][0]["pred_masks"] = torch.zeros(1, N, 2 * H_PRED, 2 * H_PRED)
    targets = [make_targets([0], [[1], [1]])]
    assert make_criterion()._targets_on_grid(targets, outputs) is targets

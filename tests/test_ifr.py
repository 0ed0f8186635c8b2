"""IFR's pieces for online models: the cross-frame mask loss (``criteria/cross_frame_mask.py``) and the online
multi-scale test-time augmentation (``inference/tta.py``), on the tiny model (d = 64, <= 64 px frames)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from local2global.inference.tta import MultiScaleTTA, TTAState, parse_scales, resample_to_grid, resize_frame
from local2global.modeling.criteria import CrossFrameMaskLoss
from local2global.modeling.trackers import state_nbytes
from script_runner import run_script
from test_model import make_clip, make_video

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
IFR_CONFIG = ROOT / "configs" / "trackers" / "ifr_cross_frame_tiny_synthetic.py"
TINY = ROOT / "configs" / "models" / "local2global_tiny.py"
LAMBDA_E, MASK_W, DICE_W = 0.3, 5.0, 5.0


def build_tiny():
    torch.manual_seed(0)
    return instantiate(LazyConfig.load(str(TINY)).model)


# ---------------------------------------------------------------------------------------------- cross-frame loss
def _bce(x, y):
    return (max(x, 0.0) - x * y + math.log1p(math.exp(-abs(x))))


def _hand_losses(logits, target):
    """Per-row mean BCE and 1 - dice, computed scalar by scalar."""
    bce = sum(_bce(x, y) for x, y in zip(logits, target)) / len(logits)
    p = [1 / (1 + math.exp(-x)) for x in logits]
    dice = 1 - (2 * sum(a * b for a, b in zip(p, target)) + 1) / (sum(p) + sum(target) + 1)
    return bce, dice


def _tiny_case(valid1=True):
    """T = 2, one clip, N = 3 slots, Dm = 2, a 2x2 grid; one track on slot 1."""
    embeds = torch.tensor([[[0.1, 0.2], [1.0, -0.5], [0.3, 0.3]],
                           [[0.0, 0.4], [0.5, 2.0], [-0.2, 0.1]]]).unsqueeze(1).requires_grad_(True)  # (T,1,N,Dm)
    feats = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]], [[0.2, 0.3], [-1.0, 1.0]]],
                          [[[0.0, 1.0], [1.5, -0.5]], [[1.0, 0.5], [0.2, -2.0]]]]).unsqueeze(1).requires_grad_(True)
    masks = [torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]), torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])]
    outputs = [{"mask_embeds": embeds[t], "mask_features": feats[t]} for t in range(2)]
    valid = [torch.tensor([True]), torch.tensor([valid1])]
    targets = [[{"labels": torch.tensor([0]), "masks": masks[t], "valid": valid[t]} for t in range(2)]]
    assignment = {"slots": [torch.tensor([1])], "first_frame": [torch.tensor([0])],
                  "supervised": torch.tensor([[True, True]]), "num_masks": 2.0}
    return outputs, targets, assignment, embeds, feats, masks


def _cross_logits(embeds, feats, t1, t2):
    e = embeds[t1, 0, 1].tolist()
    f = feats[t2, 0]
    return [e[0] * f[0].flatten()[k].item() + e[1] * f[1].flatten()[k].item() for k in range(4)]


def test_cross_frame_loss_equals_hand_computed_bce_dice():
    outputs, targets, assignment, embeds, feats, masks = _tiny_case()
    term = CrossFrameMaskLoss(lambda_e=LAMBDA_E, mask_weight=MASK_W, dice_weight=DICE_W, num_points=None)
    losses = term(outputs, targets, assignment)
    bce_sum = dice_sum = 0.0
    for t1, t2 in ((0, 1), (1, 0)):  # slot 1 of each frame predicts the track's mask on the other frame
        b, d = _hand_losses(_cross_logits(embeds, feats, t1, t2), masks[t2].flatten().tolist())
        bce_sum, dice_sum = bce_sum + b, dice_sum + d
    torch.testing.assert_close(losses["loss_mask_xframe"], torch.tensor(LAMBDA_E * MASK_W * bce_sum / 2.0))
    torch.testing.assert_close(losses["loss_dice_xframe"], torch.tensor(LAMBDA_E * DICE_W * dice_sum / 2.0))

    # the track absent on frame 1: no row predicts its frame-1 mask; frame 1's slot still predicts frame 0
    outputs, targets, assignment, embeds, feats, masks = _tiny_case(valid1=False)
    losses = term(outputs, targets, assignment)
    b, d = _hand_losses(_cross_logits(embeds, feats, 1, 0), masks[0].flatten().tolist())
    torch.testing.assert_close(losses["loss_mask_xframe"], torch.tensor(LAMBDA_E * MASK_W * b / 2.0))
    torch.testing.assert_close(losses["loss_dice_xframe"], torch.tensor(LAMBDA_E * DICE_W * d / 2.0))

    # frame 0 not supervised: only the row from frame 1 remains
    outputs, targets, assignment, embeds, feats, masks = _tiny_case()
    assignment["supervised"] = torch.tensor([[False, True]])
    b, d = _hand_losses(_cross_logits(embeds, feats, 1, 0), masks[0].flatten().tolist())
    torch.testing.assert_close(term(outputs, targets, assignment)["loss_mask_xframe"],
                               torch.tensor(LAMBDA_E * MASK_W * b / 2.0))


def test_cross_frame_loss_gradients_reach_the_embeddings():
    outputs, targets, assignment, embeds, feats, _ = _tiny_case()
    losses = CrossFrameMaskLoss(num_points=None)(outputs, targets, assignment)
    sum(losses.values()).backward()
    g = embeds.grad[:, 0]  # (T, N, Dm)
    assert g[0, 1].abs().sum() > 0 and g[1, 1].abs().sum() > 0  # the matched slot of both frames
    assert g[:, 0].abs().sum() == 0 and g[:, 2].abs().sum() == 0  # unmatched slots get none
    assert feats.grad.abs().sum() > 0


def test_cross_frame_loss_point_mode_and_average_option():
    outputs, targets, assignment, *_ = _tiny_case()
    dense = CrossFrameMaskLoss(num_points=None)(outputs, targets, assignment)
    # averaging over the other frames: with 2 frames there is one other frame, so nothing changes
    avg = CrossFrameMaskLoss(num_points=None, average_other_frames=True)(outputs, targets, assignment)
    torch.testing.assert_close(avg["loss_mask_xframe"], dense["loss_mask_xframe"])
    torch.manual_seed(0)
    points = CrossFrameMaskLoss(num_points=16)(outputs, targets, assignment)
    assert torch.isfinite(points["loss_mask_xframe"]) and points["loss_mask_xframe"] > 0


def test_cross_frame_loss_in_the_model_config():
    cfg = LazyConfig.load(str(IFR_CONFIG))
    cfg.model.num_classes = 3
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    term = model.criterion.extra_terms[0]
    assert isinstance(term, CrossFrameMaskLoss) and term.num_points is None and term.mask_weight == 5.0
    assert model.criterion.needs_mask_embeds
    model.train()
    clips = [make_clip(3, seed=0), make_clip(3, seed=1, video_id=2)]
    losses = model(clips)
    assert losses["loss_mask_xframe"].item() > 0 and losses["loss_dice_xframe"].item() > 0
    losses["loss_mask_xframe"].backward()
    mask_embed_grad = [p.grad for p in model.decoder.mask_embed.parameters()]
    assert all(g is not None for g in mask_embed_grad) and sum(g.abs().sum() for g in mask_embed_grad) > 0
    # the embeddings the trackers expose reproduce the frame's own mask logits
    state = None
    with torch.no_grad():
        images = model.preprocess(clips[0]["images"][:1])
        mf, ms = model.encode(images.tensor)
        _, out = model.step(state, ms, mf, frame_index=0)
    torch.testing.assert_close(torch.einsum("bnc,bchw->bnhw", out["mask_embeds"], out["mask_features"]),
                               out["pred_masks"], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- TTA
def test_parse_scales_and_resize():
    assert parse_scales("48, 64,80") == (48, 64, 80)
    with pytest.raises(ValueError):
        parse_scales("0,64")
    frame = make_video(1, 32, 48)["frames"][0]
    assert resize_frame(frame, 32) is frame  # same size: untouched
    assert tuple(resize_frame(frame, 48).shape) == (3, 48, 72)
    assert tuple(resize_frame(frame, 48, max_size=60).shape) == (3, 40, 60)


def test_resample_to_grid_geometry():
    probs = torch.rand(2, 8, 12)
    same = resample_to_grid(probs, (32, 48), (30, 44), (8, 12), (32, 48), (30, 44))
    torch.testing.assert_close(same, probs)  # identical geometry: identity
    # a 2x finer source of a piecewise-constant map sampled at the coarse cell centres
    fine = torch.zeros(1, 16, 16)
    fine[:, :, 8:] = 1.0  # right half
    coarse = resample_to_grid(fine, (64, 64), (64, 64), (8, 8), (32, 32), (32, 32))
    assert torch.equal(coarse[0, :, :4], torch.zeros(8, 4)) and torch.equal(coarse[0, :, 4:], torch.ones(8, 4))
    # padding: the image area of the source maps onto the image area of the target
    padded_src = torch.zeros(1, 8, 8)
    padded_src[:, :6, :6] = 1.0  # image = the top-left 24x24 px of a 32x32 padded input
    out = resample_to_grid(padded_src, (32, 32), (24, 24), (6, 6), (24, 24), (24, 24))
    torch.testing.assert_close(out, torch.ones(1, 6, 6))


def test_tta_with_one_scale_equals_plain_inference():
    model = build_tiny()
    model.eval()
    video = make_video(5, 64, 64)
    plain = model.inference_video(video)
    (tta,) = MultiScaleTTA(model, scales=(64,)).eval()([video])
    assert tta == plain
    frames = video["frames"]
    for a, b in zip(model.iter_video(frames, (64, 64)), MultiScaleTTA(model, (64,)).iter_video(frames, (64, 64))):
        assert torch.equal(a.track_ids, b.track_ids) and torch.equal(a.scores, b.scores)
        assert torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)


def test_tta_with_the_same_scale_twice_matches_slots_to_themselves():
    model = build_tiny()
    model.eval()
    video = make_video(4, 64, 64)
    plain = model.inference_video(video)
    tta = MultiScaleTTA(model, scales=(64, 64), pivot=0, match_threshold=0.0)  # every slot matched on frame 0
    state = None
    model.postprocessor.reset()
    for i, frame in enumerate(video["frames"]):
        state, _ = tta.process_frame(state, frame, (64, 64), frame_index=i)
    assert torch.equal(state.assign[1], torch.arange(20)) and bool(state.matched.all())
    result = model.postprocessor.finalize(video["video_id"], (64, 64))
    assert result["labels"] == plain["labels"]
    torch.testing.assert_close(torch.tensor(result["scores"]), torch.tensor(plain["scores"]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_tta_two_scales_state_flat_and_partial_bijection():
    model = build_tiny()
    model.eval()
    frames = make_video(3, 32, 32)["frames"]
    # a threshold between the pivot slots' frame-0 scores: some slots are matched on frame 0, the others later
    # or never (the random model's scores change little across frames)
    with torch.no_grad():
        mask_features, multi_scale = model.encode(model.preprocess([frames[0]]).tensor)
        _, out = model.step(None, multi_scale, mask_features, frame_index=0)
    top = out["pred_logits"][0].sigmoid().max(-1).values
    threshold = float(top.median())
    tta = MultiScaleTTA(model, scales=(32, 48), pivot=0, match_threshold=threshold)
    sizes, state = {}, None
    model.postprocessor.reset()
    for i in range(200):
        state, inst = tta.process_frame(state, frames[i % 3], (32, 32), frame_index=i, store=False,
                                        return_instances=(i == 0))
        if i == 0:
            assert inst.masks.shape[1:] == (32, 32)
            assert int(state.matched.sum()) == int((top >= threshold).sum())  # matched on their first frame
            first_assign = state.assign.clone()
        if i + 1 in (20, 200):
            sizes[i + 1] = state_nbytes(state)
    assert isinstance(state, TTAState) and len(state.states) == 2
    assert sizes[20] == sizes[200]
    per_scale = 20 * 64 * 4 + 20 * 4 * 4  # the tiny Local2Global tracker's state at each scale
    assert sizes[20] == 2 * per_scale + 2 * 20 * 8 + 20  # + the (S, N) int64 slot map + (N,) bool flags
    other = state.assign[1][state.assign[1] >= 0]
    assert len(other) == int(state.matched.sum()) and len(set(other.tolist())) == len(other)
    assert bool((state.assign[1][~state.matched] == -1).all())
    assert 0 < int((top >= threshold).sum()) < 20  # a partial match on frame 0
    assert int(state.matched.sum()) >= int((top >= threshold).sum())
    # a pair, once made, is kept
    kept = first_assign[1] >= 0
    assert torch.equal(state.assign[1][kept], first_assign[1][kept])


@pytest.mark.slow
def test_eval_tta_script_on_the_tiny_synthetic_data(tmp_path, tiny_synthetic_root):
    out = tmp_path / "tta"
    proc = run_script("eval_tta.py", ["--config-file", "configs/local2global_tiny_synthetic.py",
                                      "--tta-scales", "48,64", "train.device=cpu", f"train.output_dir={out}"],
                      tiny_synthetic_root, timeout=200)
    assert proc.returncode == 0, proc.stdout[-3000:]
    import json

    written = json.loads((out / "eval_results_tta.json").read_text())
    assert written["tta"] == {"scales": [48, 64], "pivot": 1}
    assert "segm" in written["results"] and 0.0 <= written["results"]["segm"]["AP"] <= 100.0


XFRAME_OVERRIDE = "{_target_: local2global.modeling.criteria.CrossFrameMaskLoss, num_points: null}"


@pytest.mark.parametrize("config, terms", [
    ("configs/local2global_tiny_synthetic.py", f"[{XFRAME_OVERRIDE}]"),
    ("configs/trackers/inspro_tiny_synthetic.py",
     f"[{{_target_: local2global.modeling.criteria.BoxDedupLoss}}, {XFRAME_OVERRIDE}]"),
    ("configs/trackers/minvis_tiny_synthetic.py", f"[{XFRAME_OVERRIDE}]"),
    ("configs/trackers/dvis_tiny_synthetic.py", f"[{XFRAME_OVERRIDE}]"),
])
def test_cross_frame_loss_is_one_override_for_any_tracker(config, terms):
    from local2global.engine.overrides import apply_overrides_strict

    cfg = apply_overrides_strict(LazyConfig.load(str(ROOT / config)),
                                 ["model.num_classes=3", f"model.criterion.extra_terms={terms}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    model.train()
    losses = model([make_clip(2, seed=0)])
    assert losses["loss_mask_xframe"].item() > 0 and losses["loss_dice_xframe"].item() > 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses["loss_mask_xframe"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_cross_frame_loss_in_point_mode_on_full_resolution_targets():
    cfg = LazyConfig.load(str(IFR_CONFIG))
    cfg.model.num_classes = 3
    cfg.model.criterion.set_criterion.num_points = 64  # the term follows (interpolated), the matcher too
    cfg.model.criterion.set_criterion.matcher.num_points = 64
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert model.criterion.extra_terms[0].num_points == 64
    model.train()
    losses = model([make_clip(2, seed=0), make_clip(2, seed=1, video_id=2)])
    assert torch.isfinite(losses["loss_mask_xframe"]) and losses["loss_mask_xframe"].item() > 0
    assert torch.isfinite(losses["loss_dice_xframe"]) and losses["loss_dice_xframe"].item() > 0

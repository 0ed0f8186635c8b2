"""Denoising (DN) queries through the meta-architecture: frame 0 of a training clip (MaskDINO image mode)."""

from __future__ import annotations

import pytest
import torch

from test_model import build, make_clip, tiny_cfg

pytestmark = pytest.mark.timeout(120)


def dn_cfg(dn_num=8, noise_scale=0.4, mode="seg"):
    cfg = tiny_cfg()
    cfg.model.decoder.dn = mode
    cfg.model.decoder.dn_num = dn_num
    cfg.model.decoder.noise_scale = noise_scale
    cfg.model.criterion.set_criterion.dn = "seg" if mode == "seg" else "standard"
    cfg.model.criterion.reduced_supervision = False
    return cfg


def _frame0_outputs(model, clips):
    """Run the encoder and frame 0 of ``clips`` as ``forward_train`` does; returns (state, outputs)."""
    images = model.preprocess([c["images"][0] for c in clips])
    mask_features, multi_scale = model.encode(images.tensor)
    targets = model.prepare_targets([{**c, "instances": c["instances"][:1]} for c in clips], images)
    dn_targets = [{k: clip[0][k][clip[0]["valid"]] for k in ("labels", "boxes")} for clip in targets]
    return model.step(None, multi_scale, mask_features, need_interm=True, dn_targets=dn_targets)


def test_dn_losses_are_added_and_train_the_label_embedding():
    model = build(dn_cfg())
    model.train()
    clips = [make_clip(3, seed=0), make_clip(3, seed=1, video_id=2)]
    losses = model(clips)
    dn_keys = {k for k in losses if "_dn" in k}
    # final stage + every earlier stage (initial prediction + 2 decoder layers) x the five "seg" terms
    assert dn_keys == {f"{t}_dn{s}" for t in ("loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou")
                       for s in ("", "_0", "_1", "_2")}
    assert all(torch.isfinite(losses[k]) and losses[k].item() > 0 for k in dn_keys)
    sum(losses.values()).backward()
    # DN query contents are label_enc(noisy label): only the DN losses give label_enc a real gradient.
    assert model.decoder.label_enc.weight.grad.abs().sum().item() > 0


def test_dn_queries_do_not_change_the_matching_queries_or_the_state():
    """The DN attention mask hides the DN queries from the matching ones: same outputs, same propagated state."""
    model = build(dn_cfg(noise_scale=0.0))
    model.train()
    clips = [make_clip(2, seed=3), make_clip(2, seed=4, video_id=2)]
    torch.manual_seed(0)
    state_dn, out_dn = _frame0_outputs(model, clips)
    model.decoder.dn = "no"  # same weights, no DN queries
    state, out = _frame0_outputs(model, clips)
    assert "dn" in out_dn and "dn" not in out
    n = model.num_queries
    assert state_dn.queries.shape == state.queries.shape == (2, n, model.decoder.hidden_dim)
    assert out_dn["pred_logits"].shape == out["pred_logits"].shape == (2, n, model.num_classes)
    for key in ("pred_logits", "pred_masks", "pred_boxes"):
        torch.testing.assert_close(out_dn[key], out[key], rtol=1e-4, atol=1e-5)
        for a, b in zip(out_dn["aux_outputs"], out["aux_outputs"]):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state_dn.queries, state.queries, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state_dn.boxes, state.boxes, rtol=1e-4, atol=1e-5)

    # Without noise each DN group reconstructs the ground truth from its exact box: the DN queries' initial
    # reference boxes are the targets' boxes, in the documented layout (group g, video b, instance j).
    mask_dict = out_dn["dn"]
    known = mask_dict["output_known_lbs_bboxes"]
    pad = int(mask_dict["pad_size"])
    single = pad // int(mask_dict["scalar"])
    assert known["pred_logits"].shape[:2] == (2, pad)
    init_boxes = known["aux_outputs"][0]["pred_boxes"]  # initial prediction = sigmoid(reference)
    gt_box = clips[0]["instances"][0].gt_boxes.tensor[0]  # instance 0 of video 0 (the only one valid at t=0)
    h, w = clips[0]["instances"][0].image_size
    cx, cy = (gt_box[0] + gt_box[2]) / 2 / w, (gt_box[1] + gt_box[3]) / 2 / h
    for g in range(int(mask_dict["scalar"])):
        torch.testing.assert_close(init_boxes[0, g * single, :2], torch.stack([cx, cy]), rtol=0, atol=1e-5)


def test_dn_is_training_only():
    model = build(dn_cfg())
    model.eval()
    clips = [make_clip(2, seed=5)]
    state, out = _frame0_outputs(model, clips)
    assert "dn" not in out and state.queries.shape[1] == model.num_queries


def test_loss_keys_do_not_depend_on_which_frames_reduced_supervision_skips(monkeypatch):
    """Frame 0 carries the DN (and interm) terms; when reduced supervision skips it for every clip the keys must
    still be there (as zeros), or detectron2's cross-process metric averaging fails under DDP
    (``KeyError: 'loss_ce_dn'``)."""
    from local2global.modeling import video_criterion

    model = build(dn_cfg())
    model.train()
    clips = [make_clip(3, seed=0), make_clip(3, seed=1, video_id=2)]
    torch.manual_seed(0)
    all_frames = model(clips)

    def skip_frame0(num_clips, num_frames, reduced=True, generator=None):
        keep = torch.ones(num_clips, num_frames, dtype=torch.bool)
        keep[:, 0] = False
        return keep

    monkeypatch.setattr(video_criterion, "sample_supervised_frames", skip_frame0)
    torch.manual_seed(0)
    skipped = model(clips)
    assert set(skipped) == set(all_frames)
    dn_keys = [k for k in skipped if "_dn" in k]
    assert dn_keys and all(skipped[k].item() == 0.0 for k in dn_keys)
    assert all(all_frames[k].item() > 0.0 for k in dn_keys)
    # the frame-1/2 terms are still real losses
    assert skipped["loss_ce"].item() > 0.0

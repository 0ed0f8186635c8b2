"""DVIS's online referring tracker (``DVISTracker``) on the tiny config (d = 64, 64 px) with a frozen segmenter.

Shapes, the online property, a flat state over 50 vs 500 frames, the frozen segmenter (no gradients, eval mode)
while the tracker trains, the loss decreasing when overfitting one clip, guided matching switching at the stated
iteration, the pre-alignment undoing a permutation, DVIS++'s noise, the parameter count at d = 256 (DVIS's Table 9:
9.68M), the optimizer's parameters and the loading of a segmenter-only checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.events import EventStorage

from local2global.modeling.trackers import DVISTracker, MinVISTracker, state_nbytes
from local2global.modeling.trackers.dvis import scaled_iterations
from test_model import make_clip, make_video

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "trackers" / "dvis_tiny_synthetic.py"
N, D, C = 20, 64, 3
#: DVIS's Table 9: 9.68M tracker parameters (R-50, d = 256); ours at C = 40 (YouTube-VIS), sigmoid head.
DVIS_TABLE9_PARAMS = 9.68e6
DVIS_PARAMS_D256_C40 = 9_680_680


def build(guided_matching_iters: int = 0, **tracker):
    cfg = LazyConfig.load(str(CONFIG))
    cfg.model.num_classes = C
    cfg.model.tracker.guided_matching_iters = guided_matching_iters
    for k, v in tracker.items():
        setattr(cfg.model.tracker, k, v)
    torch.manual_seed(0)
    return instantiate(cfg.model)


def test_config_resolves_as_dvis():
    cfg = LazyConfig.load(str(CONFIG))
    assert cfg.model.tracker.guided_matching_iters == cfg.train.max_iter // 2
    cfg.train.max_iter = 10
    assert cfg.model.tracker.guided_matching_iters == 5  # follows train.max_iter overrides
    assert scaled_iterations(40000, 0.5) == 20000 and scaled_iterations(7, 0.5) == 3
    model = build()
    assert isinstance(model.tracker, DVISTracker) and model.segmenter_frozen
    assert model.tracker.num_layers == 6 and model.tracker.hidden_dim == D
    crit = model.criterion
    assert (crit.box_loss, crit.interm_loss, crit.reduced_supervision) == (False, False, False)
    assert crit.losses == ("labels", "masks")
    assert crit.weight_dict["loss_ce"] == 2.0 and crit.weight_dict["loss_mask"] == 5.0
    assert all(f"loss_ce_{i}" in crit.weight_dict for i in range(model.tracker.num_layers - 1))


def test_shapes_and_online_property():
    model = build().eval()
    video = make_video(6)
    frames = video["frames"]
    state, outs = None, []
    with torch.no_grad():
        for i, frame in enumerate(frames):
            images = model.preprocess([frame])
            mf, ms = model.encode(images.tensor)
            state, out = model.step(state, ms, mf, frame_index=i)
            outs.append(out)
    h, w = outs[0]["pred_masks"].shape[-2:]
    for out in outs:
        assert out["pred_logits"].shape == (1, N, C)
        assert out["pred_masks"].shape == (1, N, h, w)
        assert out["pred_boxes"].shape == (1, N, 4)
        assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
        assert out["aux_outputs"] == []  # inference: only the last block's heads run
        assert "match_outputs" not in out  # eval: no guided matching
    model.tracker.aux_at_inference = True
    with torch.no_grad():
        images = model.preprocess([frames[0]])
        mf, ms = model.encode(images.tensor)
        _, out_all = model.step(None, ms, mf)
    assert len(out_all["aux_outputs"]) == 5
    assert all(a["pred_masks"].shape == (1, N, h, w) for a in out_all["aux_outputs"])
    assert torch.equal(out_all["pred_masks"], outs[0]["pred_masks"])  # the last block does not depend on it
    model.tracker.aux_at_inference = False
    assert state.output.shape == state.embeds.shape == (1, N, D)
    # the tracker's predictions are its own, not the segmenter's
    seg_logits = model.decoder.predict(torch.zeros(1, N, D), torch.zeros(1, D, h, w))[0]
    assert not torch.allclose(outs[0]["pred_logits"], seg_logits.expand_as(outs[0]["pred_logits"]))
    full = list(model.iter_video(frames, (64, 64)))
    prefix = list(model.iter_video(frames[:3], (64, 64)))
    for a, b in zip(full[:3], prefix):
        assert torch.equal(a.track_ids, b.track_ids)
        assert torch.equal(a.scores, b.scores)
        assert torch.equal(a.masks, b.masks)
    (result,) = model([video])
    assert len(result["scores"]) == model.postprocessor.test_topk
    assert all(len(seg) == len(frames) for seg in result["segmentations"])


@pytest.mark.slow
def test_state_size_is_flat_over_50_and_500_frames():
    model = build().eval()
    frame = make_video(1, 32, 32)["frames"][0]
    sizes, state = {}, None
    model.postprocessor.reset()
    with torch.no_grad():
        for i in range(500):
            state, _ = model.process_frame(state, frame, (32, 32), store=False, frame_index=i)
            if i + 1 in (50, 500):
                sizes[i + 1] = state_nbytes(state)
    assert sizes[50] == sizes[500] == 2 * N * D * 4


def test_frozen_segmenter_trains_only_the_tracker_and_stays_in_eval_mode():
    model = build().train()
    assert not any(p.requires_grad for m in model.segmenter_modules() for p in m.parameters())
    assert all(not m.training for seg in model.segmenter_modules() for m in seg.modules())
    assert model.tracker.training
    losses = model([make_clip(5, seed=2)])
    assert not any(k.endswith("_interm") or "bbox" in k or "giou" in k for k in losses)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_4"} <= set(losses)
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.tracker.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["class_embed.weight"].abs().sum() > 0
    assert grads["blocks.0.cross_attn.attn.in_proj_weight"].abs().sum() > 0
    assert all(p.grad is None for m in model.segmenter_modules() for p in m.parameters())
    assert all(not m.training for seg in model.segmenter_modules() for m in seg.modules())
    # the optimizer of scripts/train_net.py receives the tracker's parameters only
    from local2global.engine.optim import get_trainable_optimizer_params

    groups = get_trainable_optimizer_params(model, None, base_lr=1e-4, weight_decay_norm=0.0)
    params = {id(p) for g in groups for p in g["params"]}
    assert params == {id(p) for p in model.tracker.parameters()}


def test_segmenter_only_checkpoint_loads_with_missing_tracker_keys(tmp_path):
    from local2global.modeling.checkpoint import Local2GlobalCheckpointer

    cfg = LazyConfig.load(str(CONFIG))
    cfg.model.num_classes = C
    cfg.model.tracker = L(MinVISTracker)(similarity="embedding")  # an image-mode segmenter (stage 1)
    cfg.model.criterion.set_criterion.dec_layers = 6  # the DVIS config reads it from the tracker
    torch.manual_seed(1)
    segmenter = instantiate(cfg.model)
    path = tmp_path / "segmenter.pth"
    torch.save({"model": segmenter.state_dict()}, path)
    model = build()
    Local2GlobalCheckpointer(model).load(str(path))
    for name, value in segmenter.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    missing = set(model.state_dict()) - set(segmenter.state_dict())
    assert missing and all(k.startswith("tracker.") for k in missing)
    assert missing == {"tracker." + k for k in model.tracker.state_dict()}


@pytest.mark.slow
def test_loss_decreases_when_overfitting_one_clip():
    model = build().train()
    clip = make_clip(5, seed=4)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    segmenter_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    history = []
    for _ in range(30):
        total = sum(model([clip]).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.7 * first, history
    assert all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in segmenter_before.items())


def test_guided_matching_switches_at_the_stated_iteration():
    switch = 7
    model = build(guided_matching_iters=switch).train()
    clip = make_clip(3, seed=2)
    seen = {}
    for it in (0, switch - 1, switch, switch + 5):
        with EventStorage(start_iter=it):
            images = model.preprocess(clip["images"])
            mf, ms = model.encode(images.tensor)
            _, out = model.step(None, [m[:1] for m in ms], mf[:1], frame_index=0)
            seen[it] = "match_outputs" in out
            if seen[it]:
                match = out["match_outputs"]
                assert match["pred_logits"].shape == (1, N, C) and match["pred_masks"].shape[1] == N
                assert not match["pred_logits"].requires_grad
    assert seen == {0: True, switch - 1: True, switch: False, switch + 5: False}
    assert model.tracker.current_iteration() is None  # outside a storage: iteration 0, guided
    assert model.tracker.guided_matching_active()
    assert not build(guided_matching_iters=0).train().tracker.guided_matching_active()
    # the criterion matches on the segmenter's predictions while guided, on the tracker's afterwards
    criterion, captured = model.criterion, {}
    forward = criterion.forward

    def spy(outputs, targets, generator=None):
        captured["outputs"], captured["targets"] = outputs, targets
        return forward(outputs, targets, generator)

    criterion.forward = spy
    clip = make_clip(3, seed=5)
    for it, guided in ((switch - 1, True), (switch, False)):
        with EventStorage(start_iter=it):
            model([clip])
        outs, targets = captured["outputs"], captured["targets"]
        assert all(("match_outputs" in o) == guided for o in outs)
        used = criterion.last_assignment["slots"][0]
        own = criterion.match_tracks([{k: v for k, v in o.items() if k != "match_outputs"} for o in outs],
                                     targets)[0][0]
        if guided:
            seg = criterion.match_tracks([o["match_outputs"] for o in outs], targets)[0][0]
            assert torch.equal(used, seg)
            assert (used >= 0).all() and not torch.equal(seg, own)  # a random tracker disagrees with its segmenter
        else:
            assert torch.equal(used, own)


def _fake_frame(embeds: torch.Tensor, hw: int = 8):
    b, n, d = embeds.shape
    decoded = SimpleNamespace(hs=[embeds], pred_boxes=[torch.rand(b, n, 4)],
                              pred_logits=[torch.randn(b, n, C)], pred_masks=[torch.randn(b, n, hw, hw)])
    ctx = SimpleNamespace(mask_features=torch.randn(b, d, hw, hw), want_mask_embeds=True)
    return ctx, decoded


def test_prealignment_undoes_a_permutation_and_guides_with_the_same_order():
    torch.manual_seed(0)
    tracker = DVISTracker(C, num_queries=N, hidden_dim=D, dim_feedforward=128, guided_matching_iters=10).train()
    first = torch.randn(2, N, D)
    perm = torch.stack([torch.randperm(N) for _ in range(2)])  # slot i's instance is at perm[b, i] in frame 1
    second = torch.empty_like(first)
    second.scatter_(1, perm.unsqueeze(-1).expand(-1, -1, D), first)
    ctx, decoded = _fake_frame(first)
    state, out0 = tracker.update(None, ctx, None, decoded)
    assert torch.equal(state.embeds, first)
    assert out0["mask_embeds"].shape == (2, N, D)
    ctx, decoded = _fake_frame(second)
    state, out1 = tracker.update(state, ctx, None, decoded)
    assert torch.equal(state.embeds, first)  # re-ordered back into slot order
    assert torch.equal(out1["match_outputs"]["pred_logits"], torch.gather(decoded.pred_logits[0], 1,
                                                                          perm.unsqueeze(-1).expand(-1, -1, C)))
    # Gradient flows through time: frame 1's loss reaches the blocks through frame 0's output.
    out1["pred_logits"].sum().backward()
    assert tracker.blocks[0].cross_attn.attn.in_proj_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["rs", "wa", "cc"])
def test_dvis_plus_query_noise_is_training_only_and_keeps_a_permutation(mode):
    torch.manual_seed(0)
    tracker = DVISTracker(C, num_queries=N, hidden_dim=D, dim_feedforward=128, query_noise=mode,
                          noise_ratio=1.0).train()
    embeds = torch.randn(1, N, D)
    state = SimpleNamespace(embeds=embeds, output=torch.randn(1, N, D))
    perm, identity = tracker.initial_queries(state, embeds)
    assert perm.shape == (1, N) and not torch.equal(perm[0], torch.arange(N))  # some slots take another query
    assert not torch.allclose(identity, embeds)  # the initial queries are corrupted
    if mode == "rs":
        assert torch.equal(perm[0].sort().values, torch.arange(N))
        assert torch.equal(identity, embeds[:, perm[0]])
    tracker.eval()
    perm, identity = tracker.initial_queries(state, embeds)
    assert torch.equal(perm[0], torch.arange(N)) and torch.equal(identity, embeds)  # no noise at inference


def test_parameter_count_at_d256_matches_dvis_table9():
    tracker = DVISTracker(40, num_queries=100, hidden_dim=256)
    count = tracker.extra_parameter_count()
    assert count == DVIS_PARAMS_D256_C40
    assert round(count / 1e6, 2) == round(DVIS_TABLE9_PARAMS / 1e6, 2)
    tiny = build().tracker.extra_parameter_count()
    assert tiny == 6 * (2 * (4 * D * D + 4 * D + 2 * D) + (2 * D * 128 + 128 + D + 2 * D)) + 2 * D + \
        (D * C + C) + 3 * (D * D + D)


@pytest.mark.slow
def test_trains_through_train_net_from_no_checkpoint(tmp_path, tiny_synthetic_root):
    from script_runner import run_script

    out = tmp_path / "dvis"
    proc = run_script("train_net.py", ["--config-file", str(CONFIG.relative_to(ROOT)), "train.max_iter=4",
                                       "train.device=cpu", "train.log_period=1", "train.eval_period=-1",
                                       "train.checkpointer.period=100", "dataloader.train.total_batch_size=1",
                                       f"train.output_dir={out}"], tiny_synthetic_root, timeout=280)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert (out / "model_final.pth").is_file()
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert any(k.startswith("tracker.blocks.5.") for k in state)
    assert "loss_ce_4" in (out / "metrics.json").read_text()

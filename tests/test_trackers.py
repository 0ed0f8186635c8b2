"""The tracker interface and the trackers it ships: Local2Global (and the plain-propagation readings) and MinVIS.

Every tracker runs on the tiny model (d = 64, 64 px): output shapes, the online property (frame t does not depend
on later frames), a state whose size is flat over 50 vs 500 frames, and a loss that decreases when overfitting one
clip where the tracker trains. The README's "write your own tracker" example and a frozen-segmenter association
tracker are exercised here too, and old checkpoints (keys from before the tracker sub-package) still load.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from torch import nn

from local2global.modeling.trackers import (
    DecoderQueries, Local2GlobalTracker, MinVISTracker, Tracker, TrackState, image_mode_queries, state_nbytes,
)
from local2global.modeling.trackers.base import frame_boxes
from local2global.modeling.trackers.minvis import hungarian_permutation, reorder_outputs
from test_model import TINY, make_clip, make_video

pytestmark = pytest.mark.timeout(300)

N, D, C = 20, 64, 3


class MomentumTracker(Tracker):
    """The README's example: previous queries blended with their most similar local query by a learned gate."""

    family = "propagation"

    def __init__(self, hidden_dim: int = 256):
        super().__init__()
        self.gate = nn.Linear(2 * hidden_dim, hidden_dim)

    def decoder_input(self, state, ctx):
        if state is None:
            return image_mode_queries(ctx)
        local = ctx.selected.queries  # (B, K, D), detached top-K encoder tokens of this frame
        sim = F.normalize(state.queries, dim=-1) @ F.normalize(local, dim=-1).transpose(1, 2)
        nearest = torch.gather(local, 1, sim.argmax(-1, keepdim=True).expand(-1, -1, local.shape[-1]))
        g = torch.sigmoid(self.gate(torch.cat([state.queries, nearest], -1)))
        return DecoderQueries(g * state.queries + (1 - g) * nearest, state.boxes)

    def update(self, state, ctx, queries, decoded):
        out = decoded.as_criterion_outputs()
        return TrackState(decoded.hs_prenorm_last, frame_boxes(out["pred_masks"], queries.ref_boxes)), out


class FrozenRefiner(Tracker):
    """An association tracker on a frozen segmenter: a residual linear refinement of the image-mode queries."""

    family = "association"
    trains_segmenter = False

    def __init__(self, hidden_dim: int = 256):
        super().__init__()
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def needs_local_boxes(self, state) -> bool:
        return True

    def update(self, state, ctx, queries, decoded):
        hs = decoded.hs_prenorm_last
        refined = hs + self.proj(hs)
        logits, masks = ctx.decoder.predict(refined, ctx.mask_features)
        out = {"pred_logits": logits, "pred_masks": masks, "pred_boxes": frame_boxes(masks, queries.ref_boxes),
               "aux_outputs": []}
        return refined.detach(), out


TRACKERS = {
    "local2global": None,  # the config's own (aligner + trajectory)
    "propagation_static": L(Local2GlobalTracker)(aligner=None, num_queries=N, hidden_dim=D, global_pos="static"),
    "propagation_refined": L(Local2GlobalTracker)(aligner=None, num_queries=N, hidden_dim=D, global_pos="refined"),
    "aligner_static": "static",
    "minvis": L(MinVISTracker)(similarity="embedding"),
    "minvis_iou": L(MinVISTracker)(similarity="mask_iou"),
    "momentum": L(MomentumTracker)(hidden_dim=D),
    "frozen_refiner": L(FrozenRefiner)(hidden_dim=D),
}


def build(name: str, reduced_supervision: bool = True):
    cfg = LazyConfig.load(str(TINY))
    spec = TRACKERS[name]
    if spec == "static":
        cfg.model.tracker.global_pos = "static"
    elif spec is not None:
        cfg.model.tracker = spec
    cfg.model.criterion.reduced_supervision = reduced_supervision
    if name == "frozen_refiner":
        cfg.model.criterion.interm_loss = False
    torch.manual_seed(0)
    return instantiate(cfg.model)


@pytest.mark.parametrize("name", sorted(TRACKERS))
def test_shapes_and_online_property(name):
    model = build(name).eval()
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
    # Online: the per-frame output of frame t is the same whether or not later frames follow.
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
@pytest.mark.parametrize("name", ["local2global", "propagation_refined", "minvis", "minvis_iou", "frozen_refiner"])
def test_state_size_is_flat_over_50_and_500_frames(name):
    model = build(name).eval()
    frame = make_video(1, 32, 32)["frames"][0]
    sizes, state = {}, None
    model.postprocessor.reset()
    with torch.no_grad():
        for i in range(500):
            state, _ = model.process_frame(state, frame, (32, 32), store=False, frame_index=i)
            if i + 1 in (50, 500):
                sizes[i + 1] = state_nbytes(state)
    assert sizes[50] == sizes[500] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["propagation_static", "propagation_refined", "minvis", "momentum", "frozen_refiner"])
def test_loss_decreases_when_overfitting_one_clip(name):
    model = build(name, reduced_supervision=False).train()
    # MinVIS trains its segmenter in image mode (1-frame clips); the others on the 3-frame clip.
    clip = make_clip(1 if name == "minvis" else 3, seed=4)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3 if name == "frozen_refiner" else 1e-3)
    history = []
    for _ in range(30):
        total = sum(model([clip]).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.8 * first, history


def test_frozen_segmenter_trains_only_the_tracker_and_stays_in_eval_mode():
    model = build("frozen_refiner").train()
    assert not any(p.requires_grad for m in model.segmenter_modules() for p in m.parameters())
    assert all(not m.training for seg in model.segmenter_modules() for m in seg.modules())
    assert model.tracker.training
    losses = model([make_clip(3, seed=2)])
    assert not any(k.endswith("_interm") for k in losses)
    sum(losses.values()).backward()
    assert model.tracker.proj.weight.grad is not None and model.tracker.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for m in model.segmenter_modules() for p in m.parameters())


def test_minvis_links_permuted_queries_back_to_their_slots():
    """The Hungarian step undoes a known permutation of the queries; reorder_outputs applies it everywhere."""
    g = torch.Generator().manual_seed(0)
    prev = F.normalize(torch.randn(2, 6, 8, generator=g), dim=-1)
    perm_true = torch.stack([torch.randperm(6, generator=g) for _ in range(2)])
    cur = torch.empty_like(prev)
    for b in range(2):
        cur[b, perm_true[b]] = prev[b]  # current query perm_true[b, i] is previous slot i
    cost = 1 - prev @ cur.transpose(1, 2)
    perm = hungarian_permutation(cost)
    assert torch.equal(perm, perm_true)
    outputs = {"pred_logits": cur, "pred_masks": cur.unsqueeze(-1).expand(-1, -1, -1, 3),
               "pred_boxes": cur[..., :4], "aux_outputs": [{"pred_logits": cur}]}
    back = reorder_outputs(outputs, perm)
    assert torch.equal(back["pred_logits"], prev)
    assert torch.equal(back["pred_masks"][..., 1], prev)
    assert torch.equal(back["aux_outputs"][0]["pred_logits"], prev)


def test_minvis_on_a_repeated_frame_keeps_the_slot_order():
    model = build("minvis").eval()
    frame = make_video(1)["frames"][0]
    with torch.no_grad():
        images = model.preprocess([frame])
        mf, ms = model.encode(images.tensor)
        state0, out0 = model.step(None, ms, mf)
        state1, out1 = model.step(state0, ms, mf)
    assert torch.equal(out1["pred_logits"], out0["pred_logits"])
    assert torch.equal(state1.embeds, state0.embeds)


def test_parameter_counts_of_the_tiny_trackers():
    assert build("minvis").tracker.extra_parameter_count() == 0
    assert build("propagation_static").tracker.extra_parameter_count() == 0
    l2g = build("local2global")
    assert l2g.tracker.extra_parameter_count() == l2g.aligner.layer_parameter_count() > 0


def test_checkpoints_from_before_the_tracker_package_still_load():
    """Old keys (aligner.*, anchor_boxes.*, global_query_embed.*) map to tracker.* on load."""
    cfg = LazyConfig.load(str(TINY))
    cfg.model.tracker.global_pos = "static"
    torch.manual_seed(1)
    src = instantiate(cfg.model)
    old = {(k[len("tracker."):] if k.startswith("tracker.") else k): v for k, v in src.state_dict().items()}
    assert "aligner.layers.0.linear1.weight" in old and "anchor_boxes.weight" in old
    torch.manual_seed(2)
    dst = instantiate(cfg.model)
    assert not torch.equal(dst.tracker.anchor_boxes.weight, src.tracker.anchor_boxes.weight)
    result = dst.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_a_tracker_that_is_not_a_tracker_is_rejected():
    cfg = LazyConfig.load(str(TINY))
    cfg.model.tracker = L(nn.Identity)()
    with pytest.raises(TypeError, match="Tracker"):
        instantiate(cfg.model)
    cfg.model.tracker = L(Local2GlobalTracker)(aligner=None, num_queries=N + 1, hidden_dim=D)
    with pytest.raises(ValueError, match="num_queries"):
        instantiate(cfg.model)

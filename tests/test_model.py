"""The assembled Local2Global model: shapes, parameter counts, ablation switches, training signal, online inference.

Everything runs the real modules of ``configs/models/local2global_tiny.py`` (d = 64) on CPU; the default R-50
model is only built (not run) for its parameter counts and state-dict layout.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances

from local2global.modeling.checkpoint import convert_maskdino_state_dict
from local2global.modeling.meta_arch import Local2Global, TrackState
from local2global.modeling.trackers import state_nbytes

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "models" / "local2global_tiny.py"
R50 = ROOT / "configs" / "models" / "local2global_r50.py"

MASKDINO_R50_PARAMS = 52_058_004
ALIGNER_LAYERS_PARAMS = 3_160_320


def tiny_cfg():
    return LazyConfig.load(str(TINY))


def build(cfg) -> Local2Global:
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _rect_mask(h, w, x0, y0, x1, y1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def make_clip(num_frames=3, h=64, w=64, seed=0, video_id=1):
    """A clip with two moving rectangles of different classes; the second appears at frame 1."""
    g = torch.Generator().manual_seed(seed)
    images, instances = [], []
    for t in range(num_frames):
        img = (torch.rand(3, h, w, generator=g) * 60).to(torch.uint8)
        m0 = _rect_mask(h, w, 4 + 3 * t, 8, 24 + 3 * t, 30)
        m1 = _rect_mask(h, w, 36, 30 + 2 * t, 58, 56) if t >= 1 else torch.zeros(h, w, dtype=torch.bool)
        img[0][m0] = 220
        img[2][m1] = 200
        masks = torch.stack([m0, m1])
        inst = Instances((h, w))
        inst.gt_ids = torch.tensor([7, 9])
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_masks = masks
        boxes = torch.zeros(2, 4)
        for i, m in enumerate(masks):
            if m.any():
                ys, xs = torch.where(m)
                boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        inst.gt_boxes = Boxes(boxes)
        inst.gt_valid = masks.flatten(1).any(1)
        images.append(img)
        instances.append(inst)
    return {"video_id": video_id, "height": h, "width": w, "frame_indices": list(range(num_frames)),
            "images": images, "instances": instances}


def make_video(length=5, h=64, w=64, seed=1, video_id=3):
    clip = make_clip(length, h, w, seed, video_id)
    return {"video_id": video_id, "height": h, "width": w, "length": length,
            "file_names": [f"{i:05d}.jpg" for i in range(length)], "frames": clip["images"]}


# ---------------------------------------------------------------------------------------------- parameter counts
def test_default_model_parameter_counts_and_maskdino_layout(maskdino_reference_dir):
    cfg = LazyConfig.load(str(R50))
    model = build(cfg)
    n_all = sum(p.numel() for p in model.parameters())
    n_aligner_layers = model.aligner.layer_parameter_count()
    n_lpos = model.aligner.local_pos_embed.weight.numel()
    assert n_aligner_layers == ALIGNER_LAYERS_PARAMS
    assert n_lpos == 300 * 256
    assert n_all == MASKDINO_R50_PARAMS + ALIGNER_LAYERS_PARAMS + n_lpos
    # Every detrex MaskDINO state-dict entry exists with the same shape (through the prefix mapping).
    rows = (maskdino_reference_dir / "maskdino_r50_coco_instance_state_dict.tsv").read_text().splitlines()[1:]
    ref = {}
    for row in rows:
        name, shape, _ = row.split("\t")
        ref[name] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    assert len(ref) == 660
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = convert_maskdino_state_dict({k: torch.empty(0) for k in ref})
    name_map = dict(zip(ref.keys(), mapped.keys()))
    missing = [n for n, m in name_map.items() if m not in ours]
    wrong = [n for n, m in name_map.items() if m in ours and ours[m] != ref[n]]
    assert missing == [] and wrong == []
    extra = sorted(set(ours) - set(name_map.values()))
    assert all(k.startswith("tracker.aligner.") for k in extra), extra[:10]
    assert model.tracker.extra_parameter_count() == ALIGNER_LAYERS_PARAMS


# ---------------------------------------------------------------------------------------------- ablation switches
@pytest.mark.parametrize(
    "override, check",
    [
        ("tracker.aligner=None",
         lambda m: m.aligner is None and not any(".aligner." in k for k in m.state_dict())),
        ("tracker.global_pos=static",
         lambda m: m.tracker.anchor_boxes is not None and m.tracker.anchor_boxes.weight.shape == (20, 4)),
        ("tracker.global_pos=refined", lambda m: m.tracker.global_pos == "refined"),
        ("tracker.aligner.local_pos=dynamic",
         lambda m: m.aligner.local_pos_embed is None and m.aligner.needs_dynamic_local_pos),
        ("tracker.aligner.dim_feedforward=96", lambda m: m.aligner.layers[0].linear1.weight.shape == (96, 64)),
        ("criterion.reduced_supervision=False", lambda m: m.criterion.reduced_supervision is False),
        ("tracker.first_frame=learned", lambda m: m.tracker.global_query_embed is not None
         and m.tracker.global_query_embed.weight.shape == (20, 64)),
        ("num_queries=12", lambda m: m.decoder.num_queries == 12 and m.aligner.local_pos_embed.weight.shape[0] == 12),
    ],
)
def test_ablation_switches_change_the_built_model(override, check):
    base = build(tiny_cfg())
    cfg = tiny_cfg()
    key, value = override.split("=")
    cfg = LazyConfig.apply_overrides(cfg, [f"model.{key}={'null' if value == 'None' else value}"])
    model = build(cfg)
    assert check(model)
    assert not check(base)


# ---------------------------------------------------------------------------------------------- training
def test_training_forward_losses_and_gradients_reach_the_aligner():
    model = build(tiny_cfg())
    model.train()
    clips = [make_clip(3, seed=0), make_clip(3, seed=1, video_id=2)]
    losses = model(clips)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou"} <= set(losses)
    assert any(k.endswith("_interm") for k in losses)
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    aligner_grads = [p.grad for p in model.aligner.parameters()]
    assert all(g is not None for g in aligner_grads)
    assert sum(g.abs().sum().item() for g in aligner_grads) > 0
    # The encoder is trained through the clip as well (frame 0 image mode + interm loss).
    enc_grad = [p.grad for n, p in model.pixel_decoder.named_parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in enc_grad)


@pytest.mark.slow
def test_loss_decreases_when_overfitting_one_clip():
    cfg = tiny_cfg()
    cfg.model.criterion.reduced_supervision = False
    model = build(cfg)
    model.train()
    clip = make_clip(3, seed=4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(40):
        losses = model([clip])
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.6 * first, history


# ---------------------------------------------------------------------------------------------- inference
def test_eval_output_format_and_online_property():
    model = build(tiny_cfg())
    model.eval()
    video = make_video(6)
    (out,) = model([video])
    assert out["video_id"] == 3 and tuple(out["image_size"]) == (64, 64)
    k = len(out["scores"])
    assert k == len(out["labels"]) == len(out["segmentations"]) == 10
    assert all(len(s) == 6 for s in out["segmentations"])
    assert all(0 <= lab < 3 for lab in out["labels"])
    assert out["scores"] == sorted(out["scores"], reverse=True)
    rle = next(r for seg in out["segmentations"] for r in seg if r is not None)
    assert isinstance(rle["counts"], str) and list(rle["size"]) == [64, 64]

    # Online: frame t's per-frame output does not depend on later frames.
    frames = video["frames"]
    full = list(model.iter_video(frames, (64, 64)))
    prefix = list(model.iter_video(frames[:4], (64, 64)))
    for a, b in zip(full[:4], prefix):
        assert torch.equal(a.track_ids, b.track_ids)
        assert torch.allclose(a.scores, b.scores)
        assert torch.equal(a.masks, b.masks)


def _state_nbytes(state: TrackState) -> int:
    return sum(t.numel() * t.element_size() for t in (state.queries, state.boxes))


@pytest.mark.slow
def test_streaming_state_does_not_grow_with_video_length():
    model = build(tiny_cfg())
    model.eval()
    frame = make_video(1, 32, 32)["frames"][0]
    sizes = {}
    state = None
    model.postprocessor.reset()
    for i in range(500):
        state, _ = model.process_frame(state, frame, (32, 32), store=False)
        if i + 1 in (50, 500):
            pp = model.postprocessor
            tensors = [v for v in vars(pp).values() if torch.is_tensor(v)]
            sizes[i + 1] = (_state_nbytes(state), sum(t.numel() for t in tensors))
    assert sizes[50] == sizes[500]
    assert sizes[50][0] == 20 * 64 * 4 + 20 * 4 * 4

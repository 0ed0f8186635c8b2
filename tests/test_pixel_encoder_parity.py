"""Backbone + MaskDINOEncoder against detrex's MaskDINO fixture (tiny model) and the R-50 parameter layout."""

import csv
import json
import logging
import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet

from local2global.modeling import ms_deform_attn as msda
from local2global.modeling.segmenter.backbone import make_resnet_stages
from local2global.modeling.segmenter.pixel_decoder import MaskDINOEncoder
from local2global.layers.position_encoding import PositionEmbeddingSine

pytestmark = pytest.mark.timeout(240)
logger = logging.getLogger(__name__)

PIXEL_PREFIX = "sem_seg_head.pixel_decoder."
BACKBONE_PREFIX = "backbone."
TOL = dict(atol=1e-4, rtol=1e-4)  # reference README section 7


def _encoder_kwargs(cfg: dict) -> dict:
    kwargs = {k: v for k, v in cfg.items() if k != "_target_"}
    kwargs["input_shape"] = {name: ShapeSpec(channels=s["channels"], stride=s["stride"])
                             for name, s in kwargs["input_shape"].items()}
    return kwargs


def _tiny_backbone(cfg: dict) -> ResNet:
    stem = cfg["stem"]
    stages = cfg["stages"]
    return ResNet(
        stem=BasicStem(stem["in_channels"], stem["out_channels"], norm=stem["norm"]),
        stages=make_resnet_stages(stage_channels=[s["out_channels"] for s in stages],
                                  num_blocks=[s["num_blocks"] for s in stages],
                                  stem_channels=stem["out_channels"], norm=stages[0]["norm"],
                                  stride_in_1x1=stages[0]["stride_in_1x1"]),
        out_features=cfg["out_features"], freeze_at=cfg["freeze_at"])


def _strip(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def tiny(maskdino_reference_dir):
    ref = maskdino_reference_dir
    cfg = json.loads((ref / "tiny_config.json").read_text())["resolved_config"]
    state = torch.load(ref / "tiny_state_dict.pt", weights_only=True)
    backbone = _tiny_backbone(cfg["backbone"])
    encoder = MaskDINOEncoder(**_encoder_kwargs(cfg["sem_seg_head"]["pixel_decoder"]))
    backbone.load_state_dict(_strip(state, BACKBONE_PREFIX), strict=True)
    encoder.load_state_dict(_strip(state, PIXEL_PREFIX), strict=True)
    return {
        "backbone": backbone.eval(), "encoder": encoder.eval(), "state": state,
        "input": torch.load(ref / "tiny_input.pt", weights_only=True),
        "inter": torch.load(ref / "tiny_intermediates.pt", weights_only=True),
        "outputs": torch.load(ref / "tiny_outputs.pt", weights_only=True),
        "input_dir": ref,
    }


def test_tiny_state_dict_names_and_order(tiny):
    state = tiny["state"]
    for module, prefix in ((tiny["backbone"], BACKBONE_PREFIX), (tiny["encoder"], PIXEL_PREFIX)):
        ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in _strip(state, prefix).items()}
        assert list(ours) == list(theirs), prefix  # same names in the same order
        assert ours == theirs


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_tiny_pixel_encoder_matches_detrex(tiny, impl):
    backbone, encoder, inter = tiny["backbone"], tiny["encoder"], tiny["inter"]
    srcs = {}
    hooks = [proj.register_forward_hook(lambda m, i, o, k=k: srcs.__setitem__(k, o))
             for k, proj in enumerate(encoder.input_proj)]
    msda.set_implementation(impl)
    try:
        with torch.no_grad():
            features = backbone(tiny["input"]["backbone_input"])
            mask_features, multi_scale = encoder.forward_features(features)
    finally:
        msda.set_implementation(None)
        for h in hooks:
            h.remove()
    errors = {}
    for name in ("res2", "res3", "res4", "res5"):
        expected = inter["backbone_features"][name]
        torch.testing.assert_close(features[name], expected, **TOL)
        errors[name] = (features[name] - expected).abs().max().item()
    for lvl, expected in enumerate(inter["encoder_srcs"]):
        torch.testing.assert_close(srcs[lvl], expected, **TOL)
        errors[f"src{lvl}"] = (srcs[lvl] - expected).abs().max().item()
    shapes = [tuple(m.shape[-2:]) for m in multi_scale]
    assert shapes == [tuple(s) for s in inter["encoder_spatial_shapes"].tolist()]
    assert all(m.shape[:2] == (1, 64) for m in multi_scale)
    memory = torch.cat([m.flatten(2).transpose(1, 2) for m in multi_scale], 1)
    torch.testing.assert_close(memory, inter["encoder_memory"], **TOL)
    errors["memory"] = (memory - inter["encoder_memory"]).abs().max().item()
    expected_mask = tiny["outputs"]["mask_features"]
    assert mask_features.shape == expected_mask.shape == (1, 64, 32, 40)
    torch.testing.assert_close(mask_features, expected_mask, **TOL)
    errors["mask_features"] = (mask_features - expected_mask).abs().max().item()
    logger.info("%s max abs errors: %s", impl, {k: f"{v:.1e}" for k, v in errors.items()})


def test_default_init_statistics_match_detrex(maskdino_reference_dir):
    """Fresh (un-loaded) encoder vs detrex's default-init statistics (README: tiny_init_stats.json)."""
    ref = maskdino_reference_dir
    cfg = json.loads((ref / "tiny_config.json").read_text())["resolved_config"]
    stats = json.loads((ref / "tiny_init_stats.json").read_text())
    torch.manual_seed(0)
    encoder = MaskDINOEncoder(**_encoder_kwargs(cfg["sem_seg_head"]["pixel_decoder"]))
    checked = 0
    for name, tensor in encoder.state_dict().items():
        st = stats[PIXEL_PREFIX + name]
        t = tensor.float()
        if st["std"] == 0:  # constant init (zeros / ones): exact
            assert torch.all(t == st["mean"]), name
        elif name.endswith("sampling_offsets.bias"):  # deterministic grid
            assert t.min().item() == st["min"] and t.max().item() == st["max"], name
            assert abs(t.std().item() - st["std"]) < 1e-5, name
        else:  # random init of the same distribution: same bound and spread
            bound = max(abs(st["min"]), abs(st["max"]))
            assert abs(t.abs().max().item() - bound) < 0.35 * bound, name
            assert abs(t.std().item() - st["std"]) < 0.3 * st["std"], name
        checked += 1
    assert checked == len([k for k in stats if k.startswith(PIXEL_PREFIX)]) == 57


def test_tiny_pixel_encoder_autocast_and_batch(tiny):
    backbone, encoder = tiny["backbone"], tiny["encoder"]
    image = tiny["input"]["backbone_input"]
    with torch.no_grad():
        features = backbone(image)
        expected_mask, expected_ms = encoder.forward_features(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mask, ms = encoder.forward_features({k: v.bfloat16() for k, v in features.items()})
        # a batch of two (second image flipped) gives per-image results
        flipped = backbone(image.flip(-1))
        batched = {k: torch.cat([features[k], flipped[k]]) for k in features}
        mask2, ms2 = encoder.forward_features(batched)
    assert mask.dtype == torch.float32 and all(m.dtype == torch.float32 for m in ms)
    # only the inputs were rounded to bf16, everything inside ran in float32
    assert (mask - expected_mask).abs().max() < 0.1 * expected_mask.abs().max()
    torch.testing.assert_close(mask2[:1], expected_mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ms2[3][:1], expected_ms[3], atol=1e-5, rtol=1e-5)
    assert (mask2[1] - mask2[0]).abs().max() > 1e-2


def test_position_embedding_sine_formula():
    pe = PositionEmbeddingSine(num_pos_feats=4, temperature=10000, normalize=True, scale=2 * math.pi)
    x = torch.zeros(1, 3, 2, 3)
    pos = pe(x)
    assert pos.shape == (1, 8, 2, 3)
    for i in range(2):
        for j in range(3):
            y_c = (i + 1) / (2 + 1e-6) * 2 * math.pi
            x_c = (j + 1) / (3 + 1e-6) * 2 * math.pi
            expected = []
            for c in (y_c, x_c):  # y channels first
                for k in range(4):
                    t = 10000 ** (2 * (k // 2) / 4)
                    expected.append(math.sin(c / t) if k % 2 == 0 else math.cos(c / t))
            torch.testing.assert_close(pos[0, :, i, j], torch.tensor(expected), atol=1e-6, rtol=1e-6)
    # a padding mask restarts nothing but excludes padded rows/cols from the normalisation
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[:, :, 2] = True
    padded = pe(x, mask)
    torch.testing.assert_close(padded[0, 4, 0, :2], torch.sin(torch.tensor([1.0, 2.0]) / (2 + 1e-6) * 2 * math.pi))


def _tsv_rows(path, prefix):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        return [(r["name"][len(prefix):], tuple(json.loads(r["shape"]))) for r in reader
                if r["name"].startswith(prefix)]


def test_default_r50_backbone_and_encoder_match_detrex_layout(maskdino_reference_dir):
    tsv = maskdino_reference_dir / "maskdino_r50_coco_instance_state_dict.tsv"
    backbone = ResNet(stem=BasicStem(3, 64, norm="FrozenBN"),
                      stages=ResNet.make_default_stages(depth=50, stride_in_1x1=False, norm="FrozenBN"),
                      out_features=["res2", "res3", "res4", "res5"], freeze_at=1)
    encoder = MaskDINOEncoder(
        input_shape={"res2": ShapeSpec(channels=256, stride=4), "res3": ShapeSpec(channels=512, stride=8),
                     "res4": ShapeSpec(channels=1024, stride=16), "res5": ShapeSpec(channels=2048, stride=32)},
        transformer_dropout=0.0, transformer_nheads=8, transformer_dim_feedforward=2048, transformer_enc_layers=6,
        conv_dim=256, mask_dim=256, norm="GN", transformer_in_features=["res3", "res4", "res5"],
        common_stride=4, num_feature_levels=3, total_num_feature_levels=4, feature_order="low2high")
    for module, prefix in ((backbone, BACKBONE_PREFIX), (encoder, PIXEL_PREFIX)):
        ours = [(k, tuple(v.shape)) for k, v in module.state_dict().items()]
        theirs = _tsv_rows(tsv, prefix)
        assert len(theirs) > 100
        assert ours == theirs, prefix
    assert sum(p.numel() for p in encoder.parameters()) == 14_055_424  # README section 1
    assert sum(p.numel() for p in backbone.parameters()) == 23_454_912


def test_padding_masks_and_high2low_order(tiny):
    backbone, encoder = tiny["backbone"], tiny["encoder"]
    with torch.no_grad():
        features = backbone(tiny["input"]["backbone_input"])
        mask_none, ms_none = encoder.forward_features(features)
        shapes = [m.shape[-2:] for m in ms_none]
        no_pad = [torch.zeros(1, h, w, dtype=torch.bool) for h, w in shapes]
        mask_zero, _ = encoder.forward_features(features, no_pad)
        padded = [m.clone() for m in no_pad]
        for m in padded:
            m[:, :, -1:] = True  # last column padded on every level
        mask_pad, ms_pad = encoder.forward_features(features, padded)
    torch.testing.assert_close(mask_zero, mask_none, atol=0, rtol=0)  # all-False masks == no masks
    assert (ms_pad[0] - ms_none[0]).abs().max() > 1e-3  # valid ratios < 1 move the reference points
    with pytest.raises(ValueError, match="padding masks"):
        encoder.forward_features(features, no_pad[:2])
    with pytest.raises(KeyError, match="res2"):
        encoder.forward_features({k: v for k, v in features.items() if k != "res2"})

    cfg = json.loads((tiny["input_dir"] / "tiny_config.json").read_text())["resolved_config"]
    kwargs = _encoder_kwargs(cfg["sem_seg_head"]["pixel_decoder"])
    kwargs["feature_order"] = "high2low"
    reversed_encoder = MaskDINOEncoder(**kwargs).eval()
    with torch.no_grad():
        mask_rev, ms_rev = reversed_encoder.forward_features(features)
    # encoder levels now run from low to high resolution: [extra, res5, res4, res3]
    assert [tuple(m.shape[-2:]) for m in ms_rev] == [(2, 3), (4, 5), (8, 10), (16, 20)]
    assert mask_rev.shape == (1, 64, 32, 40)

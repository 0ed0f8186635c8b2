"""Image mode of the assembled Local2Global (frame 0, aligner off) is detrex's MaskDINO on the parity fixture.

The fixture (``tests/data/maskdino``, its ``DETREX_NOTES.md`` §3-§7) is a tiny MaskDINO run by detrex; its state
dict is loaded through the detrex -> Local2Global key mapping with ``strict=True`` and every raw output must match
within the tolerances of §7 there (continuous tensors 1e-4, top-K exactly).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "models" / "local2global_tiny.py"

# tiny_config.json's overrides of the default MaskDINO, expressed on our tiny config.
FIXTURE_OVERRIDES = [
    "model.num_classes=5",
    "model.num_queries=20",
    "model.hidden_dim=64",
    "model.pixel_decoder.transformer_dim_feedforward=64",
    "model.pixel_decoder.transformer_enc_layers=2",
    "model.decoder.dim_feedforward=64",
    "model.decoder.dec_layers=3",
    "model.tracker.aligner=null",
]


def _close(a, b, name, atol=1e-4, rtol=1e-4):
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a - b).abs().max().item()
    assert torch.allclose(a, b, atol=atol, rtol=rtol), f"{name}: max abs error {err:.3g}"
    return err


@pytest.fixture(scope="module")
def fixture(maskdino_reference_dir):
    load = lambda n: torch.load(maskdino_reference_dir / n, weights_only=True)  # noqa: E731
    return load("tiny_state_dict.pt"), load("tiny_input.pt"), load("tiny_outputs.pt")


def test_image_mode_equals_detrex_maskdino(fixture):
    state_dict, inputs, ref = fixture
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(TINY)), FIXTURE_OVERRIDES)
    model = instantiate(cfg.model).eval()
    result = model.load_state_dict(state_dict, strict=True)  # detrex names, mapped by the model's pre-hook
    assert not result.missing_keys and not result.unexpected_keys

    with torch.no_grad():
        images = model.preprocess([inputs["image_uint8"]])
        _close(images.tensor, inputs["backbone_input"], "backbone_input", atol=1e-6, rtol=0)
        mask_features, multi_scale = model.encode(images.tensor)
        state, out = model.step(None, multi_scale, mask_features, need_interm=True)

    _close(mask_features, ref["mask_features"], "mask_features")
    for key in ("pred_logits", "pred_masks", "pred_boxes"):
        _close(out[key], ref[key], key)
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"]) == 3
    for i, (a, b) in enumerate(zip(out["aux_outputs"], ref["aux_outputs"])):
        for key in ("pred_logits", "pred_masks", "pred_boxes"):
            _close(a[key], b[key], f"aux_outputs[{i}].{key}")
    for key in ("pred_logits", "pred_masks", "pred_boxes"):
        _close(out["interm_outputs"][key], ref["interm_outputs"][key], f"interm_outputs.{key}")
    # The propagated state: the last layer's pre-norm queries and Mask2Box of the final masks.
    _close(state.queries, ref["decoder_layer_outputs_prenorm"][-1], "propagated queries")
    assert state.boxes.shape == (1, 20, 4)
    assert ((state.boxes >= 0) & (state.boxes <= 1)).all()

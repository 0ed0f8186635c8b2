"""Loading detrex MaskDINO checkpoints and detectron2 backbone weights into :class:`Local2Global`.

detrex's MaskDINO keeps the pixel decoder and the transformer decoder under ``sem_seg_head``; Local2Global
injects them as ``pixel_decoder`` and ``decoder``. Inside those modules every name and shape equals detrex's, so
the mapping is a prefix rename:

==================================  ============================
detrex MaskDINO                     Local2Global
==================================  ============================
``sem_seg_head.pixel_decoder.*``    ``pixel_decoder.*``
``sem_seg_head.predictor.*``        ``decoder.*``
``backbone.*``                      ``backbone.*``
``criterion.empty_weight``          ``criterion.empty_weight``
==================================  ============================

:func:`register_detrex_key_mapping` installs a load-state-dict pre-hook on the model, so
``DetectionCheckpointer(model).load(path)`` loads a detrex checkpoint directly;
``scripts/convert_maskdino_checkpoint.py`` writes a converted file for other tools.
"""

from __future__ import annotations

import logging
from typing import Dict, Mapping

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

__all__ = ["DETREX_PREFIX_MAP", "convert_maskdino_state_dict", "register_detrex_key_mapping",
           "Local2GlobalCheckpointer"]

logger = logging.getLogger(__name__)

DETREX_PREFIX_MAP = {
    "sem_seg_head.pixel_decoder.": "pixel_decoder.",
    "sem_seg_head.predictor.": "decoder.",
}


def convert_maskdino_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename detrex MaskDINO keys to Local2Global keys (other keys are kept as they are)."""
    out = {}
    for key, value in state_dict.items():
        new_key = key
        for old, new in DETREX_PREFIX_MAP.items():
            if key.startswith(old):
                new_key = new + key[len(old):]
                break
        out[new_key] = value
    return out


def _remap_hook(module: nn.Module, state_dict, prefix: str, *args, **kwargs) -> None:
    keys = [k for k in state_dict if k.startswith(prefix + "sem_seg_head.")]
    if not keys:
        return
    for key in keys:
        rel = key[len(prefix):]
        for old, new in DETREX_PREFIX_MAP.items():
            if rel.startswith(old):
                state_dict[prefix + new + rel[len(old):]] = state_dict.pop(key)
                break
    logger.info("Mapped %d detrex MaskDINO keys (sem_seg_head.*) to Local2Global names", len(keys))


def register_detrex_key_mapping(model: nn.Module) -> None:
    """Make ``model.load_state_dict`` accept detrex MaskDINO key names."""
    model.register_load_state_dict_pre_hook(_remap_hook)


class Local2GlobalCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that maps detrex names and warns about a pixel-normalisation mismatch.

    MaskDINO's (and this project's) default normalisation is RGB with ImageNet mean/std, matching
    torchvision-style ResNet weights. MSRA-style ``R-50.pkl`` weights (Caffe2, BGR, std 1) need
    ``pixel_std = (1, 1, 1)`` and BGR input; loading them with the default settings silently degrades
    accuracy, so this warns.
    """

    def _load_model(self, checkpoint):
        author = checkpoint.get("__author__", "")
        std = getattr(self.model, "pixel_std", None)
        if author == "Caffe2" and std is not None and not torch.allclose(std.float().cpu(), torch.ones_like(std.cpu())):
            logger.warning(
                "Loading MSRA/Caffe2-style weights (BGR input, pixel_std 1) into a model normalised with "
                "pixel_std=%s (torchvision/MaskDINO convention). Set model.pixel_std=[1,1,1] and BGR means, or "
                "use torchvision-converted weights.", std.flatten().tolist())
        checkpoint["model"] = convert_maskdino_state_dict(checkpoint["model"])
        return super()._load_model(checkpoint)

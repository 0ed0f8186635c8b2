"""Device selection for configs and scripts.

Configs that must run on any machine (the tiny synthetic recipe) write ``train.device = "${l2g_device:}"``:
an OmegaConf interpolation through the resolver registered here, resolved when the value is read, so detectron2's
own ``tools/lazyconfig_train_net.py`` (which calls ``model.to(cfg.train.device)``) gets ``"cuda"`` on a GPU machine
and ``"cpu"`` elsewhere, while ``train.device=cpu`` on the command line still replaces it. The resolver is
registered when this module is imported (configs import it; so does :mod:`local2global.engine`).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from omegaconf import OmegaConf

__all__ = ["RESOLVER_NAME", "AMP_PRECISIONS", "default_device", "resolve_device", "resolve_amp_dtype",
           "configure_tf32", "register_resolvers"]

logger = logging.getLogger(__name__)

#: ``"${l2g_device:}"`` in a config resolves to :func:`default_device`.
RESOLVER_NAME = "l2g_device"


def default_device() -> str:
    """``"cuda"`` when a CUDA device is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device) -> torch.device:
    """Check a configured device string and return it as a ``torch.device``.

    ``"auto"`` / ``None`` / ``""`` mean :func:`default_device`.

    Raises:
        RuntimeError: CUDA is requested but not available (names the config key to change).
    """
    if device in (None, "", "auto"):
        device = default_device()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"train.device={device!r} but CUDA is not available on this machine; run with train.device=cpu "
            f"(or use a config whose train.device is '${{{RESOLVER_NAME}:}}', which picks the device itself)"
        )
    return dev


#: ``train.amp.precision`` values and their autocast dtypes.
AMP_PRECISIONS = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_amp_dtype(precision: Optional[str], device: torch.device) -> torch.dtype:
    """The autocast dtype of ``train.amp.precision`` on ``device``.

    ``None`` keeps each device's previous behaviour: fp16 on CUDA (detectron2's ``AMPTrainer``), bf16 on CPU.

    Raises:
        ValueError: an unknown name, or fp16 on a CPU (CPU autocast here is bf16: fp16 would need a grad scaler
            and has no speed advantage there).
        RuntimeError: bf16 on a CUDA device without bf16 support (pre-Ampere GPUs).
    """
    if precision in (None, ""):
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    key = str(precision).strip().lower()
    if key not in AMP_PRECISIONS:
        raise ValueError(f"train.amp.precision={precision!r} is not one of {sorted(AMP_PRECISIONS)} (or None)")
    dtype = AMP_PRECISIONS[key]
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("train.amp.precision='fp16' is for CUDA; on a CPU train.amp runs in bf16 "
                         "(set train.amp.precision='bf16' or None)")
    if device.type == "cuda" and dtype == torch.bfloat16 and torch.cuda.is_available() \
            and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"train.amp.precision={precision!r} but {torch.cuda.get_device_name(device)} has no "
                           "bf16 support; use train.amp.precision='fp16'")
    return dtype


def configure_tf32(enabled: Optional[bool]) -> None:
    """``train.amp.tf32``: let CUDA float32 matmuls and cuDNN convolutions use TF32 tensor cores (or forbid it).

    ``None`` leaves PyTorch's defaults (matmuls in full fp32, cuDNN convolutions allowed TF32). TF32 keeps fp32's
    range and storage but rounds the multiplicands to 10 mantissa bits (about 1e-3 relative), so it also applies to
    the parts that stay fp32 under autocast (the pixel encoder and every deformable-attention layer, whose
    projections are matmuls); the deformable sampling itself (``grid_sample`` / the compiled kernels) is not a
    matmul and is unaffected. No effect on CPUs.
    """
    if enabled is None:
        return
    enabled = bool(enabled)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    logger.info("TF32 for CUDA matmuls and cuDNN convolutions: %s", "on" if enabled else "off")


def register_resolvers() -> None:
    """Register the ``l2g_device`` OmegaConf resolver (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER_NAME):
        OmegaConf.register_new_resolver(RESOLVER_NAME, default_device)


register_resolvers()

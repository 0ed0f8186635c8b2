"""Device selection for configs and scripts.

Configs that must run on any machine (the tiny synthetic recipe) write ``train.device = "${l2g_device:}"``:
an OmegaConf interpolation through the resolver registered here, resolved when the value is read, so detectron2's
own ``tools/lazyconfig_train_net.py`` (which calls ``model.to(cfg.train.device)``) gets ``"cuda"`` on a GPU machine
and ``"cpu"`` elsewhere, while ``train.device=cpu`` on the command line still replaces it. The resolver is
registered when this module is imported (configs import it; so does :mod:`local2global.engine`).
"""

from __future__ import annotations

import logging

import torch
from omegaconf import OmegaConf

__all__ = ["RESOLVER_NAME", "default_device", "resolve_device", "register_resolvers"]

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


def register_resolvers() -> None:
    """Register the ``l2g_device`` OmegaConf resolver (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER_NAME):
        OmegaConf.register_new_resolver(RESOLVER_NAME, default_device)


register_resolvers()

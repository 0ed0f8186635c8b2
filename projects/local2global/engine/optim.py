"""Optimizer parameter groups: trainable-parameter selection + detectron2's default groups + backbone lr factor.

``configs/common/optim.py`` builds AdamW from :func:`get_trainable_optimizer_params`, which applies
``train.trainable_params`` (:mod:`local2global.engine.freeze`) before calling detectron2's
``get_default_optimizer_params``. Doing the freezing inside the optimizer's parameter construction makes it part
of the config, so it also happens under detectron2's ``tools/lazyconfig_train_net.py`` and detrex's
``tools/train_net.py``, which both build the optimizer (``cfg.optimizer.params.model = model``) before DDP.
"""

from __future__ import annotations

from typing import Optional, Sequence

from detectron2.solver import get_default_optimizer_params
from torch import nn

from .freeze import apply_trainable_params

__all__ = ["BackboneLRFactor", "get_trainable_optimizer_params"]


class BackboneLRFactor:
    """``lr_factor_func`` for ``get_default_optimizer_params``: ``factor`` for names under ``prefixes``, else 1.

    A picklable callable (a lambda in a config cannot be saved to ``config.yaml``).

    Args:
        factor: the learning-rate multiplier of the backbone (0.1 in MaskDINO / the paper's phase 2).
        prefixes: parameter-name prefixes that get the factor.
    """

    def __init__(self, factor: float = 0.1, prefixes: Sequence[str] = ("backbone.",)):
        self.factor = float(factor)
        self.prefixes = tuple(prefixes)

    def __call__(self, name: str) -> float:
        return self.factor if any(name.startswith(p) for p in self.prefixes) else 1.0

    def __repr__(self) -> str:
        return f"BackboneLRFactor(factor={self.factor}, prefixes={self.prefixes})"


def get_trainable_optimizer_params(model: nn.Module, trainable_params: Optional[Sequence[str]] = None,
                                   **kwargs):
    """Freeze what ``trainable_params`` excludes, then return detectron2's default parameter groups.

    Args:
        model: the model (set by the training script: ``cfg.optimizer.params.model = model``).
        trainable_params: fnmatch patterns of trainable parameter names, or ``None`` (keep the model's own).
        **kwargs: ``get_default_optimizer_params`` arguments (``base_lr``, ``weight_decay_norm``,
            ``lr_factor_func``, ``overrides`` ...). Frozen parameters are left out of the groups.
    """
    if model is None:
        raise ValueError("optimizer.params.model is None: the training script must set it to the built model")
    apply_trainable_params(model, trainable_params)
    return get_default_optimizer_params(model, **kwargs)

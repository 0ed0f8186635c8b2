"""Model EMA with detrex's config keys (``train.model_ema``: ``enabled``, ``decay``, ``device``,
``use_ema_weights_for_eval_only``) and its checkpoint format (``checkpoint["ema_state"]``: name -> tensor of every
parameter and buffer).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Dict, Iterator, Tuple

import torch
from detectron2.engine.train_loop import HookBase
from torch import Tensor, nn

__all__ = ["EMAState", "EMAHook", "unwrap_model"]

logger = logging.getLogger(__name__)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model, (
        torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else model


def _state_items(model: nn.Module) -> Iterator[Tuple[str, Tensor]]:
    return itertools.chain(model.named_parameters(), model.named_buffers())


class EMAState:
    """Exponential moving average of a model's parameters and buffers; checkpointable.

    Args:
        decay: ``ema = decay * ema + (1 - decay) * value`` after every step (floating tensors; others are copied).
        device: where the averages live (``""``: with the model).
    """

    def __init__(self, decay: float = 0.999, device: str = ""):
        self.decay = float(decay)
        self.device = device
        self.state: Dict[str, Tensor] = {}

    def init_from(self, model: nn.Module) -> None:
        self.state = {n: v.detach().clone().to(self.device or v.device) for n, v in _state_items(unwrap_model(model))}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, val in _state_items(unwrap_model(model)):
            ema = self.state[name]
            val = val.detach().to(ema.device)
            if ema.is_floating_point():
                ema.mul_(self.decay).add_(val.to(ema.dtype), alpha=1.0 - self.decay)
            else:
                ema.copy_(val)

    @torch.no_grad()
    def apply_to(self, model: nn.Module) -> None:
        for name, val in _state_items(unwrap_model(model)):
            if name not in self.state:
                raise KeyError(f"EMA state has no entry {name!r} (was the model changed after EMA init?)")
            val.copy_(self.state[name])

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Temporarily load the EMA weights into ``model``."""
        backup = {n: v.detach().clone() for n, v in _state_items(unwrap_model(model))}
        self.apply_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, val in _state_items(unwrap_model(model)):
                    val.copy_(backup[name])

    def state_dict(self) -> Dict[str, Tensor]:
        return self.state

    def load_state_dict(self, state_dict: Dict[str, Tensor], strict: bool = True):
        self.state = {k: v.to(self.device) if self.device else v for k, v in state_dict.items()}
        return torch.nn.modules.module._IncompatibleKeys(missing_keys=[], unexpected_keys=[])


class EMAHook(HookBase):
    """Initialises the EMA state before training (unless loaded from a checkpoint) and updates it every step."""

    def __init__(self, ema: EMAState, model: nn.Module):
        self.ema = ema
        self.model = model

    def before_train(self):
        if not self.ema.state:
            self.ema.init_from(self.model)
            logger.info("Model EMA initialised (decay %s)", self.ema.decay)

    def after_step(self):
        self.ema.update(self.model)

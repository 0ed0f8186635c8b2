"""The FFN non-linearity of the transformer layers (encoder, decoder, aligner), chosen by name as in detrex."""

from __future__ import annotations

from typing import Callable

from torch import Tensor
import torch.nn.functional as F

__all__ = ["get_activation"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu, "selu": F.selu}


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    """``"relu" | "gelu" | "glu" | "selu"`` -> the functional; anything else is an error naming the choices."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]

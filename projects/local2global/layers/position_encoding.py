"""Sine positional encoding of 2-d feature maps (DETR / Mask2Former / detrex MaskDINO convention)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Fixed sine/cosine embedding of pixel positions; ``2 * num_pos_feats`` output channels.

    For a map with padding mask ``m`` the row coordinate is ``y = cumsum_rows(~m)`` (1-based) and the column
    coordinate ``x = cumsum_cols(~m)``; with ``normalize`` they become ``y / (y_last + 1e-6) * scale``.
    Channel ``k`` of each half uses the frequency ``t_k = temperature ** (2 * floor(k/2) / num_pos_feats)``,
    even ``k`` the sine and odd ``k`` the cosine (interleaved). The ``num_pos_feats`` y-channels come first,
    then the x-channels.

    Args:
        num_pos_feats: channels per coordinate (``D/2`` for an embedding of width ``D``).
        temperature: frequency base.
        normalize: normalise coordinates to ``(0, scale]`` per image.
        scale: the normalised range (default ``2*pi``); only allowed with ``normalize``.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = False,
                 scale: Optional[float] = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: scale given but normalize is False")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Embed the positions of ``x``'s pixels.

        Args:
            x: ``(B, C, H, W)``; only its shape and device are used.
            mask: ``(B, H, W)`` bool, True = padding; ``None`` = no padding.

        Returns:
            ``(B, 2*num_pos_feats, H, W)`` float32.
        """
        if mask is None:
            mask = torch.zeros((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.bool, device=x.device)
        valid = ~mask
        y_embed = valid.cumsum(1, dtype=torch.float32)
        x_embed = valid.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        k = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
                f"normalize={self.normalize}, scale={self.scale}")

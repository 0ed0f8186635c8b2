"""The deformable transformer encoder of MaskDINO's pixel decoder (Deformable DETR, post-norm).

Parameter names equal detrex's ``MSDeformAttnTransformerEncoderOnly``: ``level_embed`` and
``encoder.layers.{i}.{self_attn.*, norm1, linear1, linear2, norm2}``.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from local2global.layers.activation import get_activation
from local2global.layers.ms_deform_attn import MultiScaleDeformableAttention, host_spatial_shapes, spatial_shapes_tensor

__all__ = ["DeformableEncoderLayer", "DeformableEncoder", "DeformableTransformerEncoderOnly",
           "encoder_reference_points", "valid_ratio"]


class DeformableEncoderLayer(nn.Module):
    """One post-norm encoder layer: deformable self-attention -> ``norm1`` -> FFN -> ``norm2``.

    The attention query is ``src + pos``, the value ``src`` and the residual ``src`` (without ``pos``).

    Args:
        d_model: width ``D``.
        d_ffn: FFN hidden width.
        dropout: dropout in attention output and FFN.
        activation: FFN non-linearity.
        n_levels: feature levels ``L``.
        n_heads: attention heads.
        n_points: sampling points per head and level.
    """

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, activation: str = "relu",
                 n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(embed_dim=d_model, num_heads=n_heads, num_levels=n_levels,
                                                       num_points=n_points, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = get_activation(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, pos: Optional[Tensor], reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """Args:
            src: ``(B, S, D)`` tokens of all levels.
            pos: ``(B, S, D)`` positional + level embedding (or ``None``).
            reference_points: ``(B, S, L, 2)`` normalised token centres per level.
            spatial_shapes: ``(L, 2)`` int64; level_start_index: ``(L,)`` int64.
            padding_mask: ``(B, S)`` bool, True = padding.

        Returns:
            ``(B, S, D)``.
        """
        src = self.self_attn(query=src, value=src, query_pos=pos, reference_points=reference_points,
                             spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                             key_padding_mask=padding_mask)
        src = self.norm1(src)
        ffn = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


def valid_ratio(mask: Tensor) -> Tensor:
    """``(B, h, w)`` padding mask -> ``(B, 2)`` valid fraction ``(w_ratio, h_ratio)`` (1 without padding)."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1)
    valid_w = (~mask[:, 0, :]).sum(1)
    return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)


def encoder_reference_points(spatial_shapes: Sequence[Tuple[int, int]], valid_ratios: Tensor) -> Tensor:
    """Token-centre reference points, normalised per level by the valid region.

    Args:
        spatial_shapes: ``(h_l, w_l)`` per level.
        valid_ratios: ``(B, L, 2)`` ``(w_ratio, h_ratio)``.

    Returns:
        ``(B, S, L, 2)`` ``(x, y)``: each token's centre expressed in every level's normalised frame.
    """
    device = valid_ratios.device
    points = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        ys, xs = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                                indexing="ij")
        ys = ys.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
        xs = xs.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        points.append(torch.stack((xs, ys), -1))
    ref = torch.cat(points, 1)
    return ref[:, :, None] * valid_ratios[:, None]


class DeformableEncoder(nn.Module):
    """A stack of ``num_layers`` deep copies of ``encoder_layer`` (attribute ``layers``)."""

    def __init__(self, encoder_layer: DeformableEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers

    def forward(self, src: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                pos: Optional[Tensor] = None, padding_mask: Optional[Tensor] = None) -> Tensor:
        """``(B, S, D)`` -> ``(B, S, D)`` through all layers (shapes as :class:`DeformableEncoderLayer`).

        ``spatial_shapes`` from :func:`~local2global.layers.ms_deform_attn.spatial_shapes_tensor` (as
        :class:`DeformableTransformerEncoderOnly` builds it) carries its host copy: no device read-back here or in
        the layers.
        """
        shapes = host_spatial_shapes(spatial_shapes)
        reference_points = encoder_reference_points(shapes, valid_ratios)
        out = src
        for layer in self.layers:
            out = layer(out, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return out


class DeformableTransformerEncoderOnly(nn.Module):
    """Flattens multi-scale maps, adds level embeddings and runs the deformable encoder.

    Args:
        d_model: width ``D``.
        nhead: attention heads.
        num_encoder_layers: encoder depth.
        dim_feedforward: FFN hidden width.
        dropout: dropout.
        activation: FFN non-linearity.
        num_feature_levels: levels ``L`` (rows of ``level_embed``).
        enc_n_points: sampling points per head and level.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6,
                 dim_feedforward: int = 1024, dropout: float = 0.1, activation: str = "relu",
                 num_feature_levels: int = 4, enc_n_points: int = 4):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        layer = DeformableEncoderLayer(d_model, dim_feedforward, dropout, activation, num_feature_levels, nhead,
                                       enc_n_points)
        self.encoder = DeformableEncoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """detrex's init: Xavier-uniform for every matrix, then the attention layers' own init, N(0,1) level
        embeddings."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.init_weights()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[Tensor], masks: Optional[List[Tensor]], pos_embeds: List[Tensor]
                ) -> Tuple[Tensor, Tensor, Tensor]:
        """Args:
            srcs: per level ``(B, D, h_l, w_l)`` (encoder level order).
            masks: per level ``(B, h_l, w_l)`` bool padding masks (True = padding) or ``None`` (no padding:
                all-False, valid ratios 1).
            pos_embeds: per level ``(B, D, h_l, w_l)``.

        Returns:
            ``memory (B, S, D)``, ``spatial_shapes (L, 2)`` int64, ``level_start_index (L,)`` int64.
        """
        if len(srcs) != self.level_embed.shape[0]:
            raise ValueError(f"got {len(srcs)} feature levels, the encoder was built for "
                             f"{self.level_embed.shape[0]}")
        if masks is None:
            masks = [torch.zeros((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.bool, device=x.device)
                     for x in srcs]
        tokens, token_masks, token_pos, shapes = [], [], [], []
        for lvl, (src, mask, pos) in enumerate(zip(srcs, masks, pos_embeds)):
            shapes.append((int(src.shape[-2]), int(src.shape[-1])))
            tokens.append(src.flatten(2).transpose(1, 2))
            token_masks.append(mask.flatten(1))
            token_pos.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src_flat = torch.cat(tokens, 1)
        mask_flat = torch.cat(token_masks, 1)
        pos_flat = torch.cat(token_pos, 1)
        # Built from the Python sizes (cached per size and device) and carrying them: no host sync downstream.
        spatial_shapes, level_start_index = spatial_shapes_tensor(shapes, src_flat.device)
        valid_ratios = torch.stack([valid_ratio(m) for m in masks], 1)
        memory = self.encoder(src_flat, spatial_shapes, level_start_index, valid_ratios, pos_flat, mask_flat)
        return memory, spatial_shapes, level_start_index

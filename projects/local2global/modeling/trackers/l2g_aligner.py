"""The L2G-aligner: global (tracked) queries attend to the current frame's local (top-K) queries.

Paper §3.2, Eq. (3): ``q_global,t = L2G-aligner(q_global,t-1, q_local,t, g_pos,t, l_pos,t)``. It is a small
transformer decoder placed between the segmentation encoder and the segmentation decoder. SPEC §3 fixes the
open details: d = 256, 8 heads, post-norm, dropout 0; per layer self-attention over the global queries
(q = k = q_global + g_pos), cross-attention (q = q_global + g_pos, k = q_local + l_pos, v = q_local) and an FFN
(d -> F -> d). With 3 layers and F = 1024 the layers hold 3,160,320 parameters, the paper's "3.2M".

``l_pos`` (the local queries' positional embedding) is either *static* -- a learnable embedding indexed by the
token's top-K rank, owned by this module -- or *dynamic* -- computed by the meta-architecture from the tokens'
boxes with the decoder's ``ref_point_head`` and passed in. The paper argues for static (local queries contain
many duplicates, so box-derived embeddings would be near-identical); dynamic is the Table 6 ablation.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from local2global.layers.activation import get_activation

__all__ = ["L2GAligner", "L2GAlignerLayer", "LOCAL_POS_MODES"]

LOCAL_POS_MODES = ("static", "dynamic")



class L2GAlignerLayer(nn.Module):
    """One post-norm aligner layer: self-attention -> cross-attention -> FFN.

    Args:
        d_model: query width ``D``.
        nhead: attention heads.
        dim_feedforward: FFN hidden width ``F``.
        dropout: dropout in attention and FFN (0 in the paper's setting).
        activation: FFN non-linearity.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = get_activation(activation)

    def forward(self, q_global: Tensor, q_local: Tensor, g_pos: Tensor, l_pos: Optional[Tensor],
                local_padding_mask: Optional[Tensor] = None) -> Tensor:
        """Align the global queries with the local ones.

        Args:
            q_global: ``(B, N, D)`` global (tracked) queries.
            q_local: ``(B, K, D)`` local queries of the current frame (detached by the caller).
            g_pos: ``(B, N, D)`` positional embedding of the global queries.
            l_pos: ``(B, K, D)`` positional embedding of the local queries, or ``None`` for none.
            local_padding_mask: optional ``(B, K)`` bool, True = ignore that local query.

        Returns:
            ``(B, N, D)`` aligned global queries.
        """
        q = k = q_global + g_pos
        x = self.norm1(q_global + self.dropout(self.self_attn(q, k, q_global, need_weights=False)[0]))
        key = q_local if l_pos is None else q_local + l_pos
        attn = self.cross_attn(x + g_pos, key, q_local, key_padding_mask=local_padding_mask,
                               need_weights=False)[0]
        x = self.norm2(x + self.dropout(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.norm3(x + self.dropout(ffn))


class L2GAligner(nn.Module):
    """Stack of :class:`L2GAlignerLayer` plus the static local positional embedding.

    Args:
        d_model: query width ``D`` (256 for the default model).
        nhead: attention heads (8).
        num_layers: number of layers (3 in the paper).
        dim_feedforward: FFN width ``F``: 1024 (paper default); Table 5 ablates 512 / 1024 / 2048.
        dropout: dropout (0).
        num_local_queries: ``K``, the number of top-K local queries (size of the static ``l_pos`` table).
        local_pos: ``"static"`` (learnable embedding by top-K rank, default) or ``"dynamic"`` (``l_pos`` is
            passed in by the caller, computed from the local tokens' boxes).
        activation: FFN non-linearity.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, num_layers: int = 3, dim_feedforward: int = 1024,
                 dropout: float = 0.0, num_local_queries: int = 300, local_pos: str = "static",
                 activation: str = "relu"):
        super().__init__()
        if local_pos not in LOCAL_POS_MODES:
            raise ValueError(f"local_pos must be one of {LOCAL_POS_MODES}, got {local_pos!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.d_model = d_model
        self.num_local_queries = num_local_queries
        self.local_pos = local_pos
        self.layers = nn.ModuleList(
            L2GAlignerLayer(d_model, nhead, dim_feedforward, dropout, activation) for _ in range(num_layers)
        )
        self.local_pos_embed = nn.Embedding(num_local_queries, d_model) if local_pos == "static" else None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for layer in self.layers:
            for lin in (layer.linear1, layer.linear2):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
        if self.local_pos_embed is not None:
            nn.init.normal_(self.local_pos_embed.weight)

    @property
    def needs_dynamic_local_pos(self) -> bool:
        """Whether the caller must pass ``l_pos`` (computed from the local tokens' boxes)."""
        return self.local_pos == "dynamic"

    def layer_parameter_count(self) -> int:
        """Parameters in the aligner layers only (the paper's "3.2M"; excludes ``l_pos``)."""
        return sum(p.numel() for p in self.layers.parameters())

    def forward(self, q_global: Tensor, q_local: Tensor, g_pos: Tensor, l_pos: Optional[Tensor] = None,
                local_padding_mask: Optional[Tensor] = None) -> Tensor:
        """Run all layers.

        Args:
            q_global: ``(B, N, D)`` global queries (decoder outputs of the previous frame).
            q_local: ``(B, K, D)`` local queries (top-K encoder tokens of this frame, detached).
            g_pos: ``(B, N, D)`` global positional embedding (trajectory: ``ref_point_head`` of the sine
                embedding of Mask2Box of the previous masks).
            l_pos: ``(B, K, D)``; required when ``local_pos="dynamic"``, ignored (static table used) otherwise.
            local_padding_mask: optional ``(B, K)`` bool mask of local queries to ignore.

        Returns:
            ``(B, N, D)`` aligned global queries, handed to the segmentation decoder.
        """
        if q_global.shape[-1] != self.d_model or q_local.shape[-1] != self.d_model:
            raise ValueError(f"aligner width is {self.d_model}, got q_global {tuple(q_global.shape)} and "
                             f"q_local {tuple(q_local.shape)}")
        if self.local_pos == "static":
            k = q_local.shape[1]
            if k > self.num_local_queries:
                raise ValueError(f"got {k} local queries but the static l_pos table has {self.num_local_queries}")
            l_pos = self.local_pos_embed.weight[:k].unsqueeze(0).expand(q_local.shape[0], -1, -1)
        elif l_pos is None:
            raise ValueError("local_pos='dynamic' needs l_pos (B, K, D) from the caller")
        x = q_global
        for layer in self.layers:
            x = layer(x, q_local, g_pos, l_pos, local_padding_mask)
        return x

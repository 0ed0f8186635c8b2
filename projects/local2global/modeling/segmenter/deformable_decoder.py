"""MaskDINO's box-refining deformable transformer decoder (detrex ``dino_decoder.py`` semantics).

Parameter names equal detrex's ``sem_seg_head.predictor.decoder.*``: ``layers.{i}.{cross_attn, norm1, self_attn,
norm2, linear1, linear2, norm3}``, ``norm`` (the LayerNorm shared with the outer ``decoder_norm``),
``ref_point_head.layers.{0,1}`` and ``bbox_embed.{i}`` (one box MLP registered once per layer, attached by the
owner after construction).

One layer (post-norm), all tensors batch-first::

    q = k = tgt + query_pos;  tgt = norm2(tgt + self_attn(q, k, tgt))
    tgt = norm1(cross_attn(query=tgt, query_pos, reference boxes, memory))   # identity = tgt inside
    tgt = norm3(tgt + linear2(relu(linear1(tgt))))

Between layers the reference boxes are refined from the **pre-norm** layer output,
``ref_{l+1} = sigmoid(bbox_embed(out_l) + inverse_sigmoid(ref_l))``; the next layer sees them detached, the
returned list keeps the graph (detrex's "look forward twice").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from local2global.layers.activation import get_activation
from local2global.layers.box_ops import box_sine_embedding, inverse_sigmoid
from local2global.layers.ms_deform_attn import MultiScaleDeformableAttention

__all__ = ["MLP", "DeformableTransformerDecoderLayer", "DeformableTransformerDecoder", "DecoderStackOutput"]




class MLP(nn.Module):
    """Plain MLP with ReLU between layers (detrex's ``MLP``; parameters ``layers.{i}.weight/bias``).

    Args:
        input_dim / hidden_dim / output_dim: widths.
        num_layers: number of linear layers (>= 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


class DeformableTransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention -> deformable cross-attention -> FFN.

    Registration order (= state-dict order) is detrex's: ``cross_attn, norm1, self_attn, norm2, linear1,
    linear2, norm3``.

    Args:
        d_model: width ``D``.
        d_ffn: FFN hidden width.
        dropout: dropout rate (attention, residual branches).
        activation: FFN activation name.
        n_levels / n_heads / n_points: deformable attention layout.
    """

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.0, activation: str = "relu",
                 n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.cross_attn = MultiScaleDeformableAttention(embed_dim=d_model, num_heads=n_heads, num_levels=n_levels,
                                                        num_points=n_points, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = get_activation(activation)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, memory: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor,
                memory_padding_mask: Optional[Tensor] = None, self_attn_mask: Optional[Tensor] = None) -> Tensor:
        """Run one layer (in float32, autocast off, as detrex's ``@autocast(enabled=False)``).

        Args:
            tgt: ``(B, N, D)`` queries.
            query_pos: ``(B, N, D)`` positional embedding of the queries.
            reference_points: ``(B, N, L, 4)`` normalised cxcywh reference boxes per level.
            memory: ``(B, S, D)`` flattened multi-scale memory (decoder level order).
            spatial_shapes: ``(L, 2)`` int64 ``(h, w)`` per level.
            level_start_index: ``(L,)`` int64.
            memory_padding_mask: ``(B, S)`` bool, True at padded tokens.
            self_attn_mask: ``(N, N)`` bool (True = not allowed) or ``(B*heads, N, N)``.

        Returns:
            ``(B, N, D)`` the layer output (after ``norm3``).
        """
        with torch.autocast(device_type=tgt.device.type, enabled=False):
            tgt, query_pos = tgt.float(), query_pos.float()
            memory, reference_points = memory.float(), reference_points.float()
            q = k = tgt + query_pos
            tgt2 = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
            tgt = self.norm2(tgt + self.dropout2(tgt2))
            tgt = self.cross_attn(query=tgt, value=memory, query_pos=query_pos, key_padding_mask=memory_padding_mask,
                                  reference_points=reference_points, spatial_shapes=spatial_shapes,
                                  level_start_index=level_start_index)
            tgt = self.norm1(tgt)
            tgt2 = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
            tgt = self.norm3(tgt + self.dropout4(tgt2))
        return tgt


@dataclass
class DecoderStackOutput:
    """Per-layer results of :class:`DeformableTransformerDecoder`.

    Attributes:
        hs: L tensors ``(B, N, D)``, ``norm(out_l)`` (what MaskDINO calls ``hs``).
        hs_prenorm: L tensors ``(B, N, D)``, the raw layer outputs ``out_l``.
        references: L+1 tensors ``(B, N, 4)`` sigmoid boxes: ``ref_0 = sigmoid(refpoints_unsig)`` and the refined
            ``ref_{l+1}`` (with graph; each layer itself consumed the detached value).
    """

    hs: List[Tensor]
    hs_prenorm: List[Tensor]
    references: List[Tensor]


class DeformableTransformerDecoder(nn.Module):
    """Stack of :class:`DeformableTransformerDecoderLayer` with iterative box refinement.

    Args:
        decoder_layer: a built layer; deep-copied ``num_layers`` times (or shared with ``layer_share``).
        num_layers: L.
        norm: the LayerNorm applied to every layer output (MaskDINO passes its ``decoder_norm``).
        d_model: width ``D``.
        query_dim: 4 (boxes; 2 would be points).
        num_feature_levels: levels of the memory.
        layer_share: register the same layer L times (detrex's ``dec_layer_share``).
        return_intermediate: must be True (the only mode detrex supports).

    ``bbox_embed`` (a ``ModuleList`` of L box MLPs, usually the same one) is attached by the owner.
    """

    def __init__(self, decoder_layer: nn.Module, num_layers: int, norm: nn.Module, d_model: int = 256,
                 query_dim: int = 4, num_feature_levels: int = 4, layer_share: bool = False,
                 return_intermediate: bool = True):
        super().__init__()
        if not return_intermediate:
            raise ValueError("DeformableTransformerDecoder supports return_intermediate=True only (as detrex)")
        if query_dim not in (2, 4):
            raise ValueError(f"query_dim must be 2 or 4, got {query_dim}")
        if query_dim != 4:
            raise NotImplementedError("MaskDINO's decoder uses 4-d box references (query_dim=4)")
        if layer_share:
            self.layers = nn.ModuleList([decoder_layer for _ in range(num_layers)])
        else:
            self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.query_dim = query_dim
        self.d_model = d_model
        self.num_feature_levels = num_feature_levels
        self.ref_point_head = MLP(query_dim // 2 * d_model, d_model, d_model, 2)
        self.bbox_embed: Optional[nn.ModuleList] = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # detrex: Xavier-uniform on every matrix of the stack, then the deformable attention's own init.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.init_weights()

    def query_pos(self, boxes: Tensor) -> Tensor:
        """``ref_point_head(box_sine_embedding(boxes, D / 2))``: ``(..., 4)`` normalised cxcywh -> ``(..., D)``."""
        return self.ref_point_head(box_sine_embedding(boxes, self.d_model // 2))

    def forward(self, tgt: Tensor, memory: Tensor, refpoints_unsig: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, valid_ratios: Tensor, memory_padding_mask: Optional[Tensor] = None,
                self_attn_mask: Optional[Tensor] = None) -> DecoderStackOutput:
        """Decode.

        Args:
            tgt: ``(B, N, D)`` initial queries.
            memory: ``(B, S, D)`` flattened memory (decoder level order).
            refpoints_unsig: ``(B, N, 4)`` initial reference boxes, unsigmoided.
            spatial_shapes / level_start_index: memory layout, ``(L, 2)`` / ``(L,)`` int64.
            valid_ratios: ``(B, L, 2)`` ``(w, h)`` fraction of each level that is not padding.
            memory_padding_mask: ``(B, S)`` bool.
            self_attn_mask: optional self-attention mask (denoising groups).

        Returns:
            :class:`DecoderStackOutput`.
        """
        if self.bbox_embed is None or len(self.bbox_embed) != self.num_layers:
            raise RuntimeError("DeformableTransformerDecoder.bbox_embed must be a ModuleList of "
                               f"{self.num_layers} box heads (attached by MaskDINODecoder)")
        output = tgt
        reference = refpoints_unsig.sigmoid()
        references = [reference]
        hs, hs_prenorm = [], []
        ratios = torch.cat([valid_ratios, valid_ratios], dim=-1)[:, None]  # (B, 1, L, 4)
        for layer_id, layer in enumerate(self.layers):
            reference_input = reference[:, :, None] * ratios  # (B, N, L, 4)
            query_pos = self.query_pos(reference_input[:, :, 0])
            output = layer(output, query_pos, reference_input, memory, spatial_shapes, level_start_index,
                           memory_padding_mask=memory_padding_mask, self_attn_mask=self_attn_mask)
            new_reference = (self.bbox_embed[layer_id](output) + inverse_sigmoid(reference)).sigmoid()
            reference = new_reference.detach()
            references.append(new_reference)
            hs_prenorm.append(output)
            hs.append(self.norm(output))
        return DecoderStackOutput(hs=hs, hs_prenorm=hs_prenorm, references=references)

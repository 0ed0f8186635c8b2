"""MaskDINODecoder: two-stage encoder head + box-refining deformable decoder + class/mask/box heads.

Parameter- and output-compatible with detrex's ``projects/maskdino`` ``MaskDINODecoder`` (the module under
``sem_seg_head.predictor``): same constructor arguments, same parameter names and registration order
(``[query_feat, query_embed,] enc_output, enc_output_norm, class_embed, label_enc, mask_embed.layers.*,
decoder_norm, decoder.{layers.*, norm, ref_point_head.layers.*, bbox_embed.*}``; ``decoder_norm`` *is*
``decoder.norm`` and ``decoder.bbox_embed.{i}`` is one MLP registered L times).

Besides MaskDINO's image-mode :meth:`MaskDINODecoder.forward` it exposes the steps the video
meta-architecture composes (docs/ARCHITECTURE.md):

* :meth:`prepare_memory` - flatten the multi-scale features in **decoder level order** (reversed:
  coarsest first) -> :class:`MemoryBundle`;
* :meth:`encode_tokens` - two-stage token head: ``output_memory``, per-token class logits and boxes;
* :meth:`predict` - ``decoder_norm`` then the class and mask heads;
* :meth:`decode` - the decoder from given queries and reference boxes -> :class:`DecoderOutput`;
* :meth:`query_pos` - ``ref_point_head(box_sine_embedding(boxes, D / 2))``.

detrex quirks reproduced on purpose: the decoder reads the levels in reverse order; the per-layer ``hs``
are already ``decoder_norm``-ed and the heads apply ``decoder_norm`` again; references are refined from the
pre-norm layer output, while ``pred_boxes`` of layer l are ``sigmoid(bbox_embed(hs_l) + inverse_sigmoid(ref_l))``
from the normalised ``hs_l`` ("look forward twice"); two-stage proposals of size ``0.05 * 2**lvl`` in decoder
level order.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from local2global.layers.box_ops import box_sine_embedding, box_xyxy_to_cxcywh, inverse_sigmoid, mask2box
from local2global.layers.ms_deform_attn import host_spatial_shapes, spatial_shapes_tensor

from .deformable_decoder import MLP, DeformableTransformerDecoder, DeformableTransformerDecoderLayer
from .denoising import dn_post_process, prepare_for_dn
from .query_selection import SelectedQueries, TopKQuerySelector

__all__ = ["MaskDINODecoder", "MemoryBundle", "DecoderOutput", "gen_encoder_output_proposals",
           "INITIALIZE_BOX_TYPES", "DN_MODES"]

logger = logging.getLogger(__name__)

INITIALIZE_BOX_TYPES = ("mask2box", "bitmask", "no")
DN_MODES = ("no", "det", "seg")
#: Proposals outside (0.01, 0.99) in any coordinate are invalid (logit set to +inf, memory zeroed), as detrex.
_PROPOSAL_VALID_RANGE = (0.01, 0.99)


@dataclass
class MemoryBundle:
    """Flattened encoder memory as the decoder consumes it.

    Attributes:
        memory: ``(B, S, D)`` tokens, levels in decoder order (coarsest first).
        spatial_shapes: ``(L, 2)`` int64 ``(h, w)`` per level, decoder order.
        level_start_index: ``(L,)`` int64.
        valid_ratios: ``(B, L, 2)`` ``(w, h)`` non-padded fraction per level.
        padding_mask: ``(B, S)`` bool, True at padded tokens.
    """

    memory: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    padding_mask: Tensor


@dataclass
class DecoderOutput:
    """Everything :meth:`MaskDINODecoder.decode` produces.

    Attributes:
        pred_logits / pred_masks / pred_boxes: per stage, the initial prediction first when ``initial_pred``
            (heads on ``tgt``, boxes ``sigmoid(refpoints_unsig)``), then one entry per decoder layer:
            ``(B, N, C)``, ``(B, N, h, w)``, ``(B, N, 4)``.
        hs: L tensors ``(B, N, D)``, normalised layer outputs.
        hs_prenorm: L tensors ``(B, N, D)``, raw layer outputs.
        references: L+1 tensors ``(B, N, 4)``, sigmoid reference boxes (``ref_0`` = initial).
    """

    pred_logits: List[Tensor]
    pred_masks: List[Tensor]
    pred_boxes: List[Tensor]
    hs: List[Tensor]
    hs_prenorm: List[Tensor]
    references: List[Tensor]

    @property
    def hs_prenorm_last(self) -> Tensor:
        """``(B, N, D)`` un-normalised output of the last layer (the query propagated to the next frame)."""
        return self.hs_prenorm[-1]

    def as_criterion_outputs(self) -> Dict:
        """MaskDINO's prediction dict (without ``interm_outputs``): final layer + ``aux_outputs`` (earlier stages)."""
        return {
            "pred_logits": self.pred_logits[-1],
            "pred_masks": self.pred_masks[-1],
            "pred_boxes": self.pred_boxes[-1],
            "aux_outputs": [{"pred_logits": a, "pred_masks": b, "pred_boxes": c}
                            for a, b, c in zip(self.pred_logits[:-1], self.pred_masks[:-1], self.pred_boxes[:-1])],
        }


def gen_encoder_output_proposals(memory: Tensor, padding_mask: Tensor, spatial_shapes: Tensor
                                 ) -> Tuple[Tensor, Tensor]:
    """Grid proposals of the two-stage head (detrex's ``gen_encoder_output_proposals``).

    Token ``(i, j)`` of level ``lvl`` (decoder order) proposes the box centred at ``((j + 0.5) / W_valid,
    (i + 0.5) / H_valid)`` with ``w = h = 0.05 * 2**lvl``, in logit space. Padded tokens and proposals with a
    coordinate outside ``(0.01, 0.99)`` get ``+inf`` and their memory is zeroed.

    Args:
        memory: ``(B, S, D)``.
        padding_mask: ``(B, S)`` bool.
        spatial_shapes: ``(L, 2)`` int64.

    Returns:
        ``(masked memory (B, S, D), proposals_unsig (B, S, 4))``.
    """
    batch = memory.shape[0]
    proposals = []
    start = 0
    for lvl, (h, w) in enumerate(host_spatial_shapes(spatial_shapes)):
        level_mask = padding_mask[:, start:start + h * w].view(batch, h, w)
        valid_h = (~level_mask[:, :, 0]).sum(1).to(torch.float32)
        valid_w = (~level_mask[:, 0, :]).sum(1).to(torch.float32)
        ys = torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device)
        xs = torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x, grid_y], dim=-1)  # (h, w, 2)
        scale = torch.stack([valid_w, valid_h], dim=-1).view(batch, 1, 1, 2)
        grid = (grid.unsqueeze(0) + 0.5) / scale
        wh = torch.full_like(grid, 0.05 * (2.0 ** lvl))
        proposals.append(torch.cat([grid, wh], dim=-1).view(batch, -1, 4))
        start += h * w
    proposals = torch.cat(proposals, dim=1)
    lo, hi = _PROPOSAL_VALID_RANGE
    valid = ((proposals > lo) & (proposals < hi)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals))
    invalid = padding_mask.unsqueeze(-1) | ~valid
    proposals = proposals.masked_fill(invalid, float("inf"))
    memory = memory.masked_fill(invalid, 0.0)
    return memory, proposals.to(memory.dtype)


def _bitmask_boxes(mask_logits: Tensor) -> Tensor:
    """detectron2 ``BitMasks.get_bounding_boxes`` of ``mask_logits > 0``, normalised cxcywh (``+1`` on the max;
    an empty mask gives a zero box)."""
    binary = mask_logits.detach() > 0
    h, w = binary.shape[-2:]
    cols, rows = binary.any(-2), binary.any(-1)
    x = torch.arange(w, device=binary.device, dtype=torch.float32)
    y = torch.arange(h, device=binary.device, dtype=torch.float32)
    inf = torch.tensor(float("inf"), device=binary.device)
    x0 = torch.where(cols, x, inf).amin(-1)
    x1 = torch.where(cols, x, -inf).amax(-1) + 1
    y0 = torch.where(rows, y, inf).amin(-1)
    y1 = torch.where(rows, y, -inf).amax(-1) + 1
    box = torch.stack([x0, y0, x1, y1], dim=-1)
    box = torch.where(cols.any(-1, keepdim=True), box, torch.zeros_like(box))
    return box_xyxy_to_cxcywh(box) / torch.tensor([w, h, w, h], dtype=torch.float32, device=box.device)


class MaskDINODecoder(nn.Module):
    """MaskDINO's transformer predictor (detrex constructor arguments and parameter names).

    Args:
        in_channels: channels of the multi-scale features (a 1x1 ``input_proj`` is added when != hidden_dim).
        mask_classification: must be True.
        num_classes: C.
        hidden_dim: D.
        num_queries: N (= K, the number of selected encoder tokens in two-stage mode).
        nheads: heads of the decoder attention (detrex passes ``nhead`` to the layers; both must agree).
        dim_feedforward: decoder FFN width.
        dec_layers: L.
        mask_dim: mask feature channels.
        enforce_input_project: add ``input_proj`` convs even when ``in_channels == hidden_dim``.
        two_stage: select queries from encoder tokens.
        dn: ``"no"`` / ``"det"`` / ``"seg"`` denoising mode (image training only).
        noise_scale / dn_num: denoising noise and query budget.
        initialize_box_type: ``"mask2box"`` / ``"bitmask"`` / ``"no"`` (reference boxes from the encoder-stage
            masks, or the encoder-stage boxes).
        initial_pred: also predict from the decoder's input queries (aux_outputs[0]).
        learn_tgt: learnable query contents instead of the selected tokens.
        total_num_feature_levels: L_f memory levels.
        dropout / activation / nhead / dec_n_points: decoder layer settings.
        return_intermediate_dec: must be True.
        query_dim: 4.
        dec_layer_share: share one layer L times.
        semantic_ce_loss: class head with a no-object column.
        query_selector: top-K selector (default :class:`TopKQuerySelector` of ``num_queries``); no parameters.
    """

    def __init__(self, in_channels: int, mask_classification: bool = True, *, num_classes: int, hidden_dim: int,
                 num_queries: int, nheads: int, dim_feedforward: int, dec_layers: int, mask_dim: int,
                 enforce_input_project: bool, two_stage: bool, dn: str, noise_scale: float, dn_num: int,
                 initialize_box_type: str, initial_pred: bool, learn_tgt: bool, total_num_feature_levels: int = 4,
                 dropout: float = 0.0, activation: str = "relu", nhead: int = 8, dec_n_points: int = 4,
                 return_intermediate_dec: bool = True, query_dim: int = 4, dec_layer_share: bool = False,
                 semantic_ce_loss: bool = False, query_selector: Optional[nn.Module] = None):
        super().__init__()
        if not mask_classification:
            raise ValueError("MaskDINODecoder supports mask_classification=True only")
        if dn not in DN_MODES:
            raise ValueError(f"dn must be one of {DN_MODES}, got {dn!r}")
        if initialize_box_type not in INITIALIZE_BOX_TYPES:
            raise ValueError(f"initialize_box_type must be one of {INITIALIZE_BOX_TYPES}, got {initialize_box_type!r}")
        if initialize_box_type != "no" and not initial_pred:
            raise ValueError("initialize_box_type != 'no' needs initial_pred=True (as detrex)")
        if hidden_dim % 2 != 0:
            raise ValueError(f"hidden_dim must be even (sine embedding of D/2 per coordinate), got {hidden_dim}")
        if nheads != nhead:
            logger.warning("MaskDINODecoder: nheads=%d but nhead=%d; the decoder layers use nhead (as detrex)",
                           nheads, nhead)
        self.mask_classification = mask_classification
        self.num_feature_levels = total_num_feature_levels
        self.total_num_feature_levels = total_num_feature_levels
        self.initial_pred = initial_pred
        self.dn = dn
        self.learn_tgt = learn_tgt
        self.noise_scale = noise_scale
        self.dn_num = dn_num
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.two_stage = two_stage
        self.initialize_box_type = initialize_box_type
        self.num_queries = num_queries
        self.semantic_ce_loss = semantic_ce_loss
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim

        if not two_stage or learn_tgt:
            self.query_feat = nn.Embedding(num_queries, hidden_dim)
        if not two_stage and initialize_box_type == "no":
            self.query_embed = nn.Embedding(num_queries, 4)
        if two_stage:
            self.enc_output = nn.Linear(hidden_dim, hidden_dim)
            self.enc_output_norm = nn.LayerNorm(hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(proj.weight, a=1)  # c2_xavier_fill
                nn.init.zeros_(proj.bias)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1 if semantic_ce_loss else num_classes)
        self.label_enc = nn.Embedding(num_classes, hidden_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        layer = DeformableTransformerDecoderLayer(hidden_dim, dim_feedforward, dropout, activation,
                                                  self.num_feature_levels, nhead, dec_n_points)
        self.decoder = DeformableTransformerDecoder(layer, dec_layers, self.decoder_norm, d_model=hidden_dim,
                                                    query_dim=query_dim, num_feature_levels=self.num_feature_levels,
                                                    layer_share=dec_layer_share,
                                                    return_intermediate=return_intermediate_dec)
        bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.zeros_(bbox_embed.layers[-1].weight)
        nn.init.zeros_(bbox_embed.layers[-1].bias)
        self.decoder.bbox_embed = nn.ModuleList([bbox_embed for _ in range(dec_layers)])
        self.query_selector = query_selector if query_selector is not None else TopKQuerySelector(num_queries)

    # ------------------------------------------------------------------ step API
    def prepare_memory(self, multi_scale_features: Sequence[Tensor],
                       masks: Optional[Sequence[Tensor]] = None) -> MemoryBundle:
        """Flatten the multi-scale features in decoder order.

        Args:
            multi_scale_features: ``total_num_feature_levels`` maps ``(B, D_in, h_l, w_l)`` in **encoder order**
                (high to low resolution).
            masks: optional padding masks ``(B, h_l, w_l)`` bool (True = padding), encoder order. ``None``
                (MaskDINO's default path: detrex's head never passes masks) means no padding. Unlike detrex,
                whose mask flattening keeps the encoder order while the features are reversed, the masks are
                reversed together with their features.

        Returns:
            :class:`MemoryBundle` with levels reversed (coarsest first).
        """
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(f"MaskDINODecoder expects {self.num_feature_levels} feature levels, "
                             f"got {len(multi_scale_features)}")
        if masks is not None and len(masks) != len(multi_scale_features):
            raise ValueError(f"got {len(masks)} padding masks for {len(multi_scale_features)} feature levels")
        tokens, flat_masks, shapes, ratios = [], [], [], []
        for idx in reversed(range(self.num_feature_levels)):
            feat = multi_scale_features[idx]
            b, _, h, w = feat.shape
            shapes.append((h, w))
            tokens.append(self.input_proj[idx](feat).flatten(2).transpose(1, 2))
            if masks is None:
                m = torch.zeros((b, h, w), dtype=torch.bool, device=feat.device)
            else:
                m = masks[idx].to(device=feat.device, dtype=torch.bool)
            flat_masks.append(m.flatten(1))
            valid_h = (~m[:, :, 0]).sum(1).float() / h
            valid_w = (~m[:, 0, :]).sum(1).float() / w
            ratios.append(torch.stack([valid_w, valid_h], dim=-1))
        memory = torch.cat(tokens, dim=1)
        # Built from the Python sizes (cached per size and device) and carrying them: no host sync downstream.
        spatial_shapes, level_start_index = spatial_shapes_tensor(shapes, memory.device)
        return MemoryBundle(memory=memory, spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                            valid_ratios=torch.stack(ratios, dim=1), padding_mask=torch.cat(flat_masks, dim=1))

    def encode_tokens(self, bundle: MemoryBundle, return_proposals: bool = False):
        """Two-stage token head.

        Args:
            bundle: from :meth:`prepare_memory`.
            return_proposals: also return ``(output_proposals, enc_bbox_delta)`` (debugging / parity tests).

        Returns:
            ``output_memory (B, S, D)`` = ``enc_output_norm(enc_output(masked memory))``, ``enc_logits (B, S, C)``
            = ``class_embed(output_memory)``, ``enc_coords_unsig (B, S, 4)`` = shared ``bbox_embed`` delta +
            grid proposals (logit space; ``+inf`` at invalid tokens); plus the two extras when asked.
        """
        if not self.two_stage:
            raise RuntimeError("encode_tokens needs two_stage=True")
        memory, proposals = gen_encoder_output_proposals(bundle.memory, bundle.padding_mask, bundle.spatial_shapes)
        output_memory = self.enc_output_norm(self.enc_output(memory))
        enc_logits = self.class_embed(output_memory)
        delta = self.decoder.bbox_embed[0](output_memory)
        enc_coords_unsig = delta + proposals
        if return_proposals:
            return output_memory, enc_logits, enc_coords_unsig, proposals, delta
        return output_memory, enc_logits, enc_coords_unsig

    def predict(self, hs: Tensor, mask_features: Tensor) -> Tuple[Tensor, Tensor]:
        """Class and mask heads (after ``decoder_norm``).

        Args:
            hs: ``(B, N, D)`` queries.
            mask_features: ``(B, D_mask, h, w)``.

        Returns:
            ``logits (B, N, C)`` and ``mask logits (B, N, h, w)``.
        """
        x = self.decoder_norm(hs)
        logits = self.class_embed(x)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(x), mask_features)
        return logits, masks

    def query_pos(self, boxes: Tensor) -> Tensor:
        """Query positional embedding ``ref_point_head(box_sine_embedding(boxes, D / 2))``.

        Args:
            boxes: ``(..., 4)`` normalised cxcywh.

        Returns:
            ``(..., D)``.
        """
        return self.decoder.ref_point_head(box_sine_embedding(boxes, self.hidden_dim // 2))

    def decode(self, tgt: Tensor, refpoints_unsig: Tensor, bundle: MemoryBundle, mask_features: Tensor,
               self_attn_mask: Optional[Tensor] = None) -> DecoderOutput:
        """Run the decoder and the heads on every stage.

        Args:
            tgt: ``(B, N, D)`` input queries.
            refpoints_unsig: ``(B, N, 4)`` initial reference boxes (unsigmoided normalised cxcywh).
            bundle: from :meth:`prepare_memory`.
            mask_features: ``(B, D_mask, h, w)``.
            self_attn_mask: optional ``(N, N)`` bool self-attention mask (denoising groups).

        Returns:
            :class:`DecoderOutput` (initial prediction first when ``initial_pred``).
        """
        if tgt.shape[:2] != refpoints_unsig.shape[:2] or refpoints_unsig.shape[-1] != 4:
            raise ValueError(f"tgt {tuple(tgt.shape)} and refpoints_unsig {tuple(refpoints_unsig.shape)} must be "
                             "(B, N, D) and (B, N, 4)")
        logits, masks, boxes = [], [], []
        if self.initial_pred:
            lg, mk = self.predict(tgt, mask_features)
            logits.append(lg)
            masks.append(mk)
            boxes.append(refpoints_unsig.sigmoid())
        stack = self.decoder(tgt, bundle.memory, refpoints_unsig, bundle.spatial_shapes, bundle.level_start_index,
                             bundle.valid_ratios, memory_padding_mask=bundle.padding_mask,
                             self_attn_mask=self_attn_mask)
        for layer_id, hs in enumerate(stack.hs):
            lg, mk = self.predict(hs, mask_features)
            logits.append(lg)
            masks.append(mk)
            delta = self.decoder.bbox_embed[layer_id](hs)
            boxes.append((delta + inverse_sigmoid(stack.references[layer_id])).sigmoid())
        if self.training:
            # Keeps label_enc in the autograd graph when no denoising query uses it (detrex adds the same
            # numerical no-op to the final logits; DDP without find_unused_parameters needs it).
            logits[-1] = logits[-1] + 0.0 * self.label_enc.weight.sum()
        return DecoderOutput(pred_logits=logits, pred_masks=masks, pred_boxes=boxes, hs=stack.hs,
                             hs_prenorm=stack.hs_prenorm, references=stack.references)

    # ------------------------------------------------------------------ denoising
    def add_dn_queries(self, tgt: Tensor, refpoints_unsig: Tensor, targets: Sequence[Dict[str, Tensor]]
                       ) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Dict]]:
        """Prepend MaskDINO's denoising queries of ``targets`` to the matching queries.

        Args:
            tgt: ``(B, N, D)`` matching queries; refpoints_unsig: ``(B, N, 4)`` their reference boxes.
            targets: per image ``{"labels": (n,), "boxes": (n, 4) normalised cxcywh}``.

        Returns:
            ``(tgt (B, P+N, D), refpoints_unsig (B, P+N, 4), self_attn_mask, mask_dict)``; the inputs unchanged and
            ``(None, None)`` when the batch makes no DN query (no object).
        """
        dn = prepare_for_dn(targets, self.label_enc, dn_num=self.dn_num, noise_scale=self.noise_scale,
                            num_classes=self.num_classes, num_queries=tgt.shape[1])
        if dn is None:
            return tgt, refpoints_unsig, None, None
        return (torch.cat([dn.tgt, tgt], dim=1), torch.cat([dn.refpoints_unsig, refpoints_unsig], dim=1),
                dn.attn_mask, dn.mask_dict)

    @staticmethod
    def split_dn_queries(out: DecoderOutput, mask_dict: Dict) -> DecoderOutput:
        """The matching queries' part of an output whose first ``pad_size`` queries were DN queries.

        The DN part goes to ``mask_dict["output_known_lbs_bboxes"]`` (:func:`dn_post_process`); states and
        references are cut too, so nothing of the DN queries can be propagated to a next frame.
        """
        pad = int(mask_dict["pad_size"])
        logits, masks, boxes = dn_post_process(out.pred_logits, out.pred_masks, out.pred_boxes, mask_dict)
        return DecoderOutput(pred_logits=logits, pred_masks=masks, pred_boxes=boxes, hs=[h[:, pad:] for h in out.hs],
                             hs_prenorm=[h[:, pad:] for h in out.hs_prenorm],
                             references=[r[:, pad:] for r in out.references])

    # ------------------------------------------------------------------ image mode
    def initial_queries(self, selected: SelectedQueries, interm_masks: Tensor, batch: int) -> Tuple[Tensor, Tensor]:
        """MaskDINO's decoder initialisation from the selected tokens.

        Returns:
            ``tgt (B, N, D)`` (the detached tokens, or ``query_feat`` with ``learn_tgt``) and
            ``refpoints_unsig (B, N, 4)`` (Mask2Box / BitMask boxes of the encoder-stage masks, or the tokens'
            detached boxes with ``initialize_box_type="no"``).
        """
        tgt = selected.queries
        if self.learn_tgt:
            tgt = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        if self.initialize_box_type == "mask2box":
            refpoints_unsig = inverse_sigmoid(mask2box(interm_masks.detach()))
        elif self.initialize_box_type == "bitmask":
            refpoints_unsig = inverse_sigmoid(_bitmask_boxes(interm_masks))
        else:
            refpoints_unsig = selected.coords_unsig.detach()
        return tgt, refpoints_unsig

    def forward(self, multi_scale_features: Sequence[Tensor], mask_features: Tensor,
                masks: Optional[Sequence[Tensor]] = None, targets: Optional[List[Dict[str, Tensor]]] = None,
                return_intermediates: bool = False):
        """MaskDINO's image-mode forward.

        Args:
            multi_scale_features: feature maps ``(B, D, h_l, w_l)``, encoder order.
            mask_features: ``(B, D_mask, H/4, W/4)``.
            masks: optional padding masks (see :meth:`prepare_memory`).
            targets: per image ``{"labels", "boxes"}`` (normalised cxcywh), needed for denoising in training.
            return_intermediates: also return a dict of internal tensors (two-stage tensors, top-K indices,
                decoder states; parity tests).

        Returns:
            ``(outputs, mask_dict)``: ``outputs`` = ``{pred_logits (B,N,C), pred_masks (B,N,h,w),
            pred_boxes (B,N,4), aux_outputs: [initial, layer 0, ..., layer L-2], interm_outputs}`` (no
            ``interm_outputs`` without two-stage); ``mask_dict`` the denoising bookkeeping or ``None``.
            With ``return_intermediates`` a third element, the dict of internals.
        """
        bundle = self.prepare_memory(multi_scale_features, masks)
        batch = mask_features.shape[0]
        internals: Dict = {"bundle": bundle}
        interm_outputs = None
        if self.two_stage:
            output_memory, enc_logits, enc_coords_unsig, proposals, delta = self.encode_tokens(
                bundle, return_proposals=True)
            selected = self.query_selector(output_memory, enc_logits, enc_coords_unsig)
            idx = selected.indices.unsqueeze(-1).expand(-1, -1, output_memory.shape[-1])
            interm_logits, interm_masks = self.predict(torch.gather(output_memory, 1, idx), mask_features)
            interm_outputs = {"pred_logits": interm_logits, "pred_boxes": selected.coords_unsig.sigmoid(),
                              "pred_masks": interm_masks}
            tgt, refpoints_unsig = self.initial_queries(selected, interm_masks, batch)
            internals.update(output_memory=output_memory, enc_outputs_class_unselected=enc_logits,
                             enc_outputs_coord_unselected=enc_coords_unsig, output_proposals=proposals,
                             enc_bbox_delta_unselected=delta, topk_proposals=selected.indices)
        else:
            tgt = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
            refpoints_unsig = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        internals.update(decoder_init_tgt=tgt, decoder_init_refpoints_unsigmoid=refpoints_unsig)

        mask_dict = None
        attn_mask = None
        if self.dn != "no" and self.training:
            if targets is None:
                raise ValueError(f"MaskDINODecoder(dn={self.dn!r}) in training needs targets")
            tgt, refpoints_unsig, attn_mask, mask_dict = self.add_dn_queries(tgt, refpoints_unsig, targets)

        out = self.decode(tgt, refpoints_unsig, bundle, mask_features, self_attn_mask=attn_mask)
        internals["decoder_output"] = out
        if mask_dict is not None:
            out = self.split_dn_queries(out, mask_dict)
        outputs = out.as_criterion_outputs()
        if interm_outputs is not None:
            outputs["interm_outputs"] = interm_outputs
        if return_intermediates:
            return outputs, mask_dict, internals
        return outputs, mask_dict

"""In-decoder query propagation: Local2Global (L2G-aligner + trajectory) and the plain-propagation baselines.

Paper §3.2 and SPEC §2-3. The decoder's un-normalised last-layer output of frame t-1 (``hs_prenorm_last``) is
carried to frame t as the global queries; query i tracks the same instance for the whole video. At t:

* ``aligner`` given: the global queries attend to the frame's top-K local queries (L2G-aligner, Eq. 3) before
  the decoder runs; ``aligner=None``: they go straight into the decoder (propagation only);
* ``global_pos`` chooses the boxes that give the aligner's g_pos and the decoder's initial references:
  ``"trajectory"`` Mask2Box of the masks of t-1 (the paper's trajectory), ``"static"`` learnable per-slot anchor
  boxes that are not propagated (DAB-DETR style), ``"refined"`` the decoder's refined final boxes of t-1 carried
  over (InsPro / TransTrack style). The paper's Table 3 rows are cumulative, so its "propagation only" row has
  no trajectory: ``aligner=None`` with ``"static"`` or ``"refined"`` (both are benchmarked; docs/TRACKERS.md says
  which is taken as the paper's).

Frame 0: ``first_frame="image"`` is MaskDINO's image mode (top-K local queries, Mask2Box of their encoder-stage
masks; the aligner does not run); ``"learned"`` (the paper's COCO phase 1) aligns a learnable ``N×D`` embedding
with the local queries instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from local2global.layers.box_ops import inverse_sigmoid

from .base import DecoderQueries, FrameContext, Tracker, decoder_mask_embeddings, frame_boxes, image_mode_queries

__all__ = ["Local2GlobalTracker", "TrackState", "FIRST_FRAME_MODES", "GLOBAL_POS_MODES"]

FIRST_FRAME_MODES = ("image", "learned")
GLOBAL_POS_MODES = ("trajectory", "static", "refined")

# Initial size of the learnable static anchor boxes (normalised w, h), as DAB-DETR-style anchors start small.
_STATIC_ANCHOR_INIT_WH = 0.1


@dataclass
class TrackState:
    """What is carried from frame t-1 to frame t: O(N·D), independent of the video length.

    Attributes:
        queries: ``(B, N, D)`` un-normalised output of the last decoder layer (SPEC §3 "propagated query").
        boxes: ``(B, N, 4)`` normalised cxcywh boxes of the slots, detached: Mask2Box of the last masks, or the
            decoder's refined boxes with ``global_pos="refined"``.
    """

    queries: Tensor
    boxes: Tensor

    def detach(self) -> "TrackState":
        return TrackState(self.queries.detach(), self.boxes.detach())


class Local2GlobalTracker(Tracker):
    """Local2Global's propagation step (and, with ``aligner=None``, plain query propagation).

    Args:
        aligner: :class:`~local2global.modeling.trackers.l2g_aligner.L2GAligner` (or any module with its
            ``forward(q_global, q_local, g_pos, l_pos)``, ``d_model`` and ``needs_dynamic_local_pos``), or
            ``None`` for propagation only.
        num_queries: ``N`` slots (the decoder's number of queries).
        hidden_dim: ``D``.
        first_frame: ``"image"`` or ``"learned"`` (see the module docstring).
        global_pos: ``"trajectory"``, ``"static"`` or ``"refined"``.
    """

    family = "propagation"
    trains_segmenter = True

    def __init__(self, aligner: Optional[nn.Module] = None, *, num_queries: int = 300, hidden_dim: int = 256,
                 first_frame: str = "image", global_pos: str = "trajectory"):
        super().__init__()
        if first_frame not in FIRST_FRAME_MODES:
            raise ValueError(f"first_frame must be one of {FIRST_FRAME_MODES}, got {first_frame!r}")
        if global_pos not in GLOBAL_POS_MODES:
            raise ValueError(f"global_pos must be one of {GLOBAL_POS_MODES}, got {global_pos!r}")
        if first_frame == "learned" and aligner is None:
            raise ValueError("first_frame='learned' aligns a learnable embedding with the local queries: "
                             "it needs an aligner (got aligner=None)")
        if aligner is not None and getattr(aligner, "d_model", hidden_dim) != hidden_dim:
            raise ValueError(f"aligner width {aligner.d_model} != decoder hidden_dim {hidden_dim}")
        self.aligner = aligner
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.first_frame = first_frame
        self.global_pos = global_pos
        # The learnable first-frame embedding (phase 1) and the static anchors only exist when used, so the
        # default model's state dict is MaskDINO's plus the aligner.
        self.global_query_embed = nn.Embedding(num_queries, hidden_dim) if first_frame == "learned" else None
        if global_pos == "static":
            self.anchor_boxes = nn.Embedding(num_queries, 4)
            with torch.no_grad():
                xy = torch.rand(num_queries, 2)
                wh = torch.full((num_queries, 2), _STATIC_ANCHOR_INIT_WH)
                self.anchor_boxes.weight.copy_(inverse_sigmoid(torch.cat([xy, wh], dim=1)))
        else:
            self.anchor_boxes = None

    # ------------------------------------------------------------------ what the meta-architecture computes
    @property
    def first_frame_uses_parameters(self) -> bool:
        # "image": frame 0 is MaskDINO's image mode, the aligner and anchors are first used at frame 1
        return self.first_frame != "image"

    def needs_local_queries(self, state: Optional[TrackState]) -> bool:
        return state is None or self.aligner is not None

    def needs_local_boxes(self, state: Optional[TrackState]) -> bool:
        return state is None

    # ------------------------------------------------------------------ the step
    def decoder_input(self, state: Optional[TrackState], ctx: FrameContext) -> DecoderQueries:
        if state is None:
            if self.first_frame == "image":
                return image_mode_queries(ctx)
            selected = ctx.selected
            if selected.queries.shape[1] != self.num_queries:
                raise ValueError("first_frame='learned' takes g_pos from the top-K local queries' boxes: "
                                 f"needs K == N, got K={selected.queries.shape[1]}, N={self.num_queries}")
            ref_boxes = self._static_anchors(ctx.batch) if self.global_pos == "static" else ctx.local_boxes
            q_global = self.global_query_embed.weight.unsqueeze(0).expand(ctx.batch, -1, -1)
            return DecoderQueries(self._align(q_global, ref_boxes, ctx), ref_boxes)
        ref_boxes = self._static_anchors(ctx.batch) if self.global_pos == "static" else state.boxes
        tgt = state.queries if self.aligner is None else self._align(state.queries, ref_boxes, ctx)
        return DecoderQueries(tgt, ref_boxes)

    def update(self, state: Optional[TrackState], ctx: FrameContext, queries: DecoderQueries, decoded
               ) -> Tuple[TrackState, Dict]:
        outputs = decoded.as_criterion_outputs()
        if ctx.want_mask_embeds:
            outputs["mask_embeds"] = decoder_mask_embeddings(ctx.decoder, decoded.hs[-1])
        if self.global_pos == "refined":
            boxes = outputs["pred_boxes"].detach()
        else:
            # detrex's mask2box gives a degenerate box for an empty interm mask at t = 0; clamping to [0, 1]
            # (what the decoder sees after inverse_sigmoid) keeps the propagated boxes and g_pos well defined.
            boxes = frame_boxes(outputs["pred_masks"], queries.ref_boxes)
        return TrackState(decoded.hs_prenorm_last, boxes), outputs

    def _static_anchors(self, batch: int) -> Tensor:
        return self.anchor_boxes.weight.sigmoid().unsqueeze(0).expand(batch, -1, -1)

    def _align(self, q_global: Tensor, ref_boxes: Tensor, ctx: FrameContext) -> Tensor:
        g_pos = ctx.decoder.query_pos(ref_boxes.detach().clamp(0.0, 1.0))
        l_pos = None
        if self.aligner.needs_dynamic_local_pos:
            # Dynamic l_pos: the decoder's ref_point_head on the tokens' encoder-stage boxes (detached).
            l_pos = ctx.decoder.query_pos(ctx.selected.coords_unsig.detach().sigmoid())
        return self.aligner(q_global, ctx.selected.queries.detach(), g_pos, l_pos)

    def extra_parameter_count(self) -> int:
        """The aligner's layers (the paper's "3.2M"), without l_pos, the first-frame embedding or anchors."""
        if self.aligner is None:
            return 0
        if hasattr(self.aligner, "layer_parameter_count"):
            return self.aligner.layer_parameter_count()
        return sum(p.numel() for p in self.aligner.parameters())

    def extra_repr(self) -> str:
        return f"first_frame={self.first_frame!r}, global_pos={self.global_pos!r}"

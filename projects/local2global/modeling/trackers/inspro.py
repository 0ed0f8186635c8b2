"""InsPro-style query-proposal propagation with intra-query attention, on the MaskDINO decoder.

InsPro (He et al., NeurIPS 2022) carries an (instance query, proposal box) pair per slot from frame t-1 to frame
t: slot i decodes the same object for the whole video. Before a slot's query is propagated it is enhanced by
*intra-query attention* over a bank of the slot's own last T outputs (paper Eq. 1)::

    q_t^i = sum_n softmax_n(eps(o_{t-n}^i)) o_{t-n}^i + o_t^i,      n = 0 .. T-1

Readings taken here (the paper leaves them open):

* **o_t** is the decoder's un-normalised last-layer output of frame t (``DecoderOutput.hs_prenorm_last``, the
  propagation family's embedding: the tensor a further decoder layer would receive), so that q_t lives in the
  space the decoder's input queries live in.
* **eps** is the paper's "linear transformation": one ``Linear(D, 1)`` scoring each bank entry, shared by all
  slots and frames and applied to each slot's entries independently; the softmax runs over the bank axis of
  *one* slot (the slots never mix: that is what makes it *intra*-query). ``score_hidden > 0`` makes eps a
  two-layer MLP ``D -> score_hidden -> 1`` (ReLU) instead.
* **The bank** is a fixed-size shift buffer of ``bank_size`` entries per slot (T = 18 at inference, the paper's
  default) with a count of the filled entries: empty entries are masked out of the softmax, and the oldest entry
  falls out when the buffer is full, so the state is O(T·N·D) whatever the video length. In training the same
  buffer holds the whole clip (every recipe's clip is shorter than 18 frames: T is "up to the clip length");
  ``train_bank_size`` caps it lower if wanted. The buffer is rebuilt out of place each frame (concatenation) so
  that gradients flow back through every bank entry across the clip, as the propagated queries do.
* **Frame 0.** The bank then holds o_0 only, so q_0 = 2 o_0 (the formula read literally: at every frame the
  propagated query is the residual o_t plus a convex combination of bank entries, so its scale is the same at
  t = 0 and later). The decoder input of frame 0 is MaskDINO's image mode (top-K encoder tokens and Mask2Box of
  their encoder-stage masks; ``first_frame="image"``, the default: the segmenter is a trained MaskDINO);
  ``first_frame="learned"`` is InsPro's own start, a learnable N×D query and N×4 proposal pair (Sparse R-CNN's
  learned proposals).
* **Proposals.** The decoder's refined final-layer boxes of t-1 (detached, clipped to the frame as InsPro clips
  its proposals) are the reference boxes (anchors) of t.

What differs from InsPro's Sparse R-CNN segmentation head: InsPro's head is M stages of *dynamic instance
interaction* (self-attention among queries, RoIAlign of each proposal, a dynamic convolution of the query with its
RoI feature) and a CondInst mask head (per-instance conditional convolutions on 1/8-resolution, 8-channel mask
features with relative coordinates). Here the decoder is MaskDINO's: self-attention, multi-scale deformable
cross-attention sampled around the reference box (no RoIAlign, no dynamic convolution), a box refinement per
layer, masks as the dot product of a mask embedding with 1/4-resolution mask features, sigmoid-focal classes;
the proposals are the deformable attention's reference boxes. The matching is the project's match-once criterion
(InsPro's temporally consistent matching, here with MaskDINO's class + box + mask costs rather than class + box),
and the box de-duplication loss is :class:`~local2global.modeling.criteria.box_dedup.BoxDedupLoss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from local2global.layers.box_ops import inverse_sigmoid

from .base import DecoderQueries, FrameContext, Tracker, decoder_mask_embeddings, image_mode_queries

__all__ = ["InsProTracker", "InsProState", "INSPRO_FIRST_FRAME_MODES", "INSPRO_BANK_SIZE"]

INSPRO_FIRST_FRAME_MODES = ("image", "learned")
#: The paper's feature-bank length at inference (its Table 2 (c): saturates at T = 18).
INSPRO_BANK_SIZE = 18
# Initial size (normalised w, h) of the learnable first-frame proposals (Sparse R-CNN starts them as whole-image
# boxes; whole-image references make deformable attention sample everywhere, so start them smaller, spread out).
_LEARNED_PROPOSAL_INIT_WH = 0.2


@dataclass
class InsProState:
    """What is carried from frame t-1 to frame t: O(T·N·D), independent of the video length.

    Attributes:
        queries: ``(B, N, D)`` the enhanced queries q_{t-1} (the decoder input of t).
        boxes: ``(B, N, 4)`` normalised cxcywh refined final boxes of t-1, detached, clipped to [0, 1].
        bank: ``(B, N, T, D)`` the last T decoder outputs o of every slot, oldest first; the last ``count``
            entries are filled.
        count: number of filled bank entries (``<= T``; a Python int: all videos of a batch advance together).
    """

    queries: Tensor
    boxes: Tensor
    bank: Tensor
    count: int

    def detach(self) -> "InsProState":
        return InsProState(self.queries.detach(), self.boxes.detach(), self.bank.detach(), self.count)


class IntraQueryAttention(nn.Module):
    """InsPro's Eq. 1 on a bank: ``q = sum_n softmax_n(eps(bank_n)) bank_n + o`` per slot.

    Args:
        d_model: ``D``.
        score_hidden: 0 (default) for the paper's linear eps ``Linear(D, 1)``; > 0 for a two-layer MLP
            ``D -> score_hidden -> 1``.
    """

    def __init__(self, d_model: int, score_hidden: int = 0):
        super().__init__()
        if score_hidden < 0:
            raise ValueError(f"score_hidden must be >= 0, got {score_hidden}")
        if score_hidden:
            self.score = nn.Sequential(nn.Linear(d_model, score_hidden), nn.ReLU(inplace=True),
                                       nn.Linear(score_hidden, 1))
        else:
            self.score = nn.Linear(d_model, 1)

    def forward(self, bank: Tensor, filled: Tensor, current: Tensor) -> Tensor:
        """Enhanced queries.

        Args:
            bank: ``(B, N, T, D)`` bank entries (empty entries are ignored whatever they hold).
            filled: ``(T,)`` bool, True at filled entries (the newest entry, the last, is always filled).
            current: ``(B, N, D)`` the newest output o_t (the residual).

        Returns:
            ``(B, N, D)``.
        """
        logits = self.score(bank).squeeze(-1)  # (B, N, T)
        logits = logits.masked_fill(~filled, float("-inf"))
        weights = logits.softmax(dim=-1)
        return torch.einsum("bnt,bntd->bnd", weights, bank) + current


class InsProTracker(Tracker):
    """InsPro-style propagation: queries and refined boxes of t-1 are the queries and anchors of t.

    Args:
        num_queries: ``N`` slots (the decoder's number of queries).
        hidden_dim: ``D``.
        bank_size: ``T``, bank entries per slot at inference (paper: 18).
        train_bank_size: bank entries in training; ``None`` = ``bank_size`` (holds the whole clip of every recipe).
        score_hidden: hidden width of eps (0 = the paper's linear eps).
        first_frame: ``"image"`` (MaskDINO's image mode) or ``"learned"`` (InsPro's learnable query-proposal
            pairs).
    """

    family = "propagation"
    trains_segmenter = True

    def __init__(self, *, num_queries: int = 300, hidden_dim: int = 256, bank_size: int = INSPRO_BANK_SIZE,
                 train_bank_size: Optional[int] = None, score_hidden: int = 0, first_frame: str = "image"):
        super().__init__()
        if first_frame not in INSPRO_FIRST_FRAME_MODES:
            raise ValueError(f"first_frame must be one of {INSPRO_FIRST_FRAME_MODES}, got {first_frame!r}")
        if bank_size < 1 or (train_bank_size is not None and train_bank_size < 1):
            raise ValueError(f"bank sizes must be >= 1, got bank_size={bank_size}, train_bank_size={train_bank_size}")
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.bank_size = bank_size
        self.train_bank_size = train_bank_size
        self.first_frame = first_frame
        self.intra_query = IntraQueryAttention(hidden_dim, score_hidden)
        if first_frame == "learned":
            self.init_queries = nn.Embedding(num_queries, hidden_dim)
            self.init_proposals = nn.Embedding(num_queries, 4)
            with torch.no_grad():
                xy = torch.rand(num_queries, 2)
                wh = torch.full((num_queries, 2), _LEARNED_PROPOSAL_INIT_WH)
                self.init_proposals.weight.copy_(inverse_sigmoid(torch.cat([xy, wh], dim=1)))
        else:
            self.init_queries = None
            self.init_proposals = None

    @property
    def capacity(self) -> int:
        """Bank entries per slot in the current mode (training or inference)."""
        if self.training and self.train_bank_size is not None:
            return self.train_bank_size
        return self.bank_size

    # ------------------------------------------------------------------ what the meta-architecture computes
    def needs_local_queries(self, state: Optional[InsProState]) -> bool:
        return state is None and self.first_frame == "image"

    def needs_local_boxes(self, state: Optional[InsProState]) -> bool:
        return state is None and self.first_frame == "image"

    # ------------------------------------------------------------------ the step
    def decoder_input(self, state: Optional[InsProState], ctx: FrameContext) -> DecoderQueries:
        if state is not None:
            return DecoderQueries(state.queries, state.boxes)
        if self.first_frame == "image":
            return image_mode_queries(ctx)
        batch = ctx.batch
        tgt = self.init_queries.weight.unsqueeze(0).expand(batch, -1, -1)
        boxes = self.init_proposals.weight.sigmoid().unsqueeze(0).expand(batch, -1, -1)
        return DecoderQueries(tgt, boxes)

    def update(self, state: Optional[InsProState], ctx: FrameContext, queries: DecoderQueries, decoded
               ) -> Tuple[InsProState, Dict]:
        outputs = decoded.as_criterion_outputs()
        if ctx.want_mask_embeds:
            outputs["mask_embeds"] = decoder_mask_embeddings(ctx.decoder, decoded.hs[-1])
        o_t = decoded.hs_prenorm_last  # (B, N, D)
        capacity = self.capacity
        if state is None:
            bank = o_t.new_zeros((*o_t.shape[:2], capacity, o_t.shape[-1]))
            count = 0
        else:
            bank, count = state.bank, state.count
            if bank.shape[2] != capacity:  # train/eval switch inside a video: keep the newest entries
                bank, count = _resize_bank(bank, count, capacity)
        # Shift out the oldest entry, append o_t (out of place: gradients reach every entry of the clip).
        bank = torch.cat([bank[:, :, 1:], o_t.unsqueeze(2)], dim=2)
        count = min(count + 1, capacity)
        filled = torch.arange(capacity, device=o_t.device) >= capacity - count
        q_t = self.intra_query(bank, filled, o_t)
        # InsPro clips its proposals to the frame; [0, 1] is also what inverse_sigmoid reads without clamping.
        boxes = outputs["pred_boxes"].detach().clamp(0.0, 1.0)
        return InsProState(q_t, boxes, bank, count), outputs

    def extra_parameter_count(self) -> int:
        """eps only (the paper's intra-query attention), without the optional learned first-frame pairs."""
        return sum(p.numel() for p in self.intra_query.parameters())

    def extra_repr(self) -> str:
        return (f"bank_size={self.bank_size}, train_bank_size={self.train_bank_size}, "
                f"first_frame={self.first_frame!r}")


def _resize_bank(bank: Tensor, count: int, capacity: int) -> Tuple[Tensor, int]:
    """A bank of another capacity holding the newest ``min(count, capacity)`` entries (right-aligned)."""
    old = bank.shape[2]
    if capacity < old:
        return bank[:, :, old - capacity:], min(count, capacity)
    pad = bank.new_zeros((*bank.shape[:2], capacity - old, bank.shape[-1]))
    return torch.cat([pad, bank], dim=2), count

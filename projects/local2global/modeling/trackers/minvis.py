"""MinVIS-style association (training-free): the image-mode segmenter per frame, slots linked by Hungarian matching.

MinVIS (Huang et al., 2022) segments every frame independently with an image segmenter and links the query
slots of frame t to those of frame t-1 by bipartite matching on the cosine similarity of the decoder's output
query embeddings (the normed decoder output, what the heads see). It adds no parameters; the segmenter is trained
in image mode (1-frame clips: the shared warm-up). ``similarity="mask_iou"`` links by the soft IoU of the slots'
masks instead: the per-frame + IoU-linking lower bound of the tracking benchmark.

The state is the previous frame's re-ordered embeddings (or mask probabilities): O(N·D) (O(N·h·w) for IoU), flat
over the video. Matching runs on the host (scipy), one batched copy per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment
import torch
from torch import Tensor
import torch.nn.functional as F

from .base import DecoderQueries, FrameContext, Tracker, decoder_mask_embeddings, image_mode_queries

__all__ = ["MinVISTracker", "AssociationState", "reorder_outputs", "hungarian_permutation", "SIMILARITIES"]

SIMILARITIES = ("embedding", "mask_iou")


@dataclass
class AssociationState:
    """The previous frame's re-ordered slot descriptors.

    Attributes:
        embeds: ``(B, N, D)`` normed decoder output embeddings of frame t-1, in slot order.
        mask_probs: ``(B, N, h, w)`` sigmoid mask probabilities of frame t-1 in slot order (``mask_iou`` only).
    """

    embeds: Tensor
    mask_probs: Optional[Tensor] = None


def hungarian_permutation(cost: Tensor) -> Tensor:
    """Per batch element, the assignment of previous slots (rows) to current queries (columns).

    Args:
        cost: ``(B, N, N)`` cost of giving previous slot i the current query j.

    Returns:
        ``(B, N)`` int64 on ``cost``'s device: ``perm[b, i]`` = the current query that becomes slot i.
    """
    host = cost.detach().float().cpu().numpy()  # one copy for the whole batch
    perms = []
    for c in host:
        rows, cols = linear_sum_assignment(c)
        perm = np.empty(c.shape[0], dtype=np.int64)
        perm[rows] = cols
        perms.append(perm)
    return torch.from_numpy(np.stack(perms)).to(cost.device)


def reorder_outputs(outputs: Dict, perm: Tensor) -> Dict:
    """Gather every per-query tensor of a MaskDINO prediction dict (and its ``aux_outputs``) by ``perm (B, N)``."""

    def gather(x: Tensor) -> Tensor:
        idx = perm.view(*perm.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
        return torch.gather(x, 1, idx)

    out = {k: gather(outputs[k]) for k in ("pred_logits", "pred_masks", "pred_boxes", "mask_embeds") if k in outputs}
    if "aux_outputs" in outputs:
        out["aux_outputs"] = [reorder_outputs(a, perm) for a in outputs["aux_outputs"]]
    return out


class MinVISTracker(Tracker):
    """Post-decoder association by Hungarian matching to the previous frame (no parameters).

    Args:
        similarity: ``"embedding"`` (MinVIS: cosine similarity of the normed output query embeddings) or
            ``"mask_iou"`` (soft IoU of the mask probabilities at the mask-feature resolution).
    """

    family = "association"
    trains_segmenter = True  # trained as an image segmenter (1-frame clips); the tracker has nothing to train

    def __init__(self, similarity: str = "embedding"):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.similarity = similarity

    def needs_local_queries(self, state) -> bool:
        return True

    def needs_local_boxes(self, state) -> bool:
        return True

    def decoder_input(self, state, ctx: FrameContext) -> DecoderQueries:
        return image_mode_queries(ctx)

    def update(self, state: Optional[AssociationState], ctx: FrameContext, queries: DecoderQueries, decoded
               ) -> Tuple[AssociationState, Dict]:
        outputs = decoded.as_criterion_outputs()
        if ctx.want_mask_embeds:
            outputs["mask_embeds"] = decoder_mask_embeddings(ctx.decoder, decoded.hs[-1])
        embeds = decoded.hs[-1]
        probs = outputs["pred_masks"].detach().sigmoid() if self.similarity == "mask_iou" else None
        if state is not None:
            perm = hungarian_permutation(self._cost(state, embeds, probs))
            outputs = reorder_outputs(outputs, perm)
            idx = perm.unsqueeze(-1).expand(-1, -1, embeds.shape[-1])
            embeds = torch.gather(embeds, 1, idx)
            if probs is not None:
                probs = outputs["pred_masks"].detach().sigmoid()
        return AssociationState(embeds.detach(), probs), outputs

    def _cost(self, state: AssociationState, embeds: Tensor, probs: Optional[Tensor]) -> Tensor:
        if self.similarity == "embedding":
            prev = F.normalize(state.embeds.float(), dim=-1)
            cur = F.normalize(embeds.detach().float(), dim=-1)
            return 1.0 - torch.bmm(prev, cur.transpose(1, 2))
        prev = state.mask_probs.flatten(2).float()
        cur = probs.flatten(2).float()
        inter = torch.bmm(prev, cur.transpose(1, 2))
        union = prev.sum(-1, keepdim=True) + cur.sum(-1).unsqueeze(1) - inter
        return 1.0 - inter / union.clamp(min=1e-6)

    def extra_repr(self) -> str:
        return f"similarity={self.similarity!r}"

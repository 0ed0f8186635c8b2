"""Top-K encoder-token selection (MaskDINO's two-stage query selection).

The encoder tokens are scored by their best class logit; the K best become the frame's *local queries*
(SPEC §2). The order of everything downstream is the top-K order (descending score, ``torch.topk``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["SelectedQueries", "TopKQuerySelector"]


@dataclass
class SelectedQueries:
    """The K selected encoder tokens of every image.

    Attributes:
        indices: ``(B, K)`` int64 token indices into the (decoder-order) memory, by descending max logit.
        queries: ``(B, K, D)`` gathered ``output_memory``, **detached** (MaskDINO's ``tgt``; the local queries).
        logits: ``(B, K, C)`` gathered encoder class logits (not detached).
        coords_unsig: ``(B, K, 4)`` gathered encoder box predictions, unsigmoided, **not** detached (their
            sigmoid is the encoder-stage ``pred_boxes``, which must train the encoder's box head, as detrex's
            ``refpoint_embed_undetach``).
    """

    indices: Tensor
    queries: Tensor
    logits: Tensor
    coords_unsig: Tensor


def _gather_tokens(x: Tensor, indices: Tensor) -> Tensor:
    return torch.gather(x, 1, indices.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class TopKQuerySelector(nn.Module):
    """Selects the ``num_queries`` encoder tokens with the highest max class logit.

    Args:
        num_queries: K.
    """

    def __init__(self, num_queries: int):
        super().__init__()
        if num_queries <= 0:
            raise ValueError(f"num_queries must be positive, got {num_queries}")
        self.num_queries = int(num_queries)

    def forward(self, output_memory: Tensor, enc_logits: Tensor, enc_coords_unsig: Tensor) -> SelectedQueries:
        """Pick the top-K tokens.

        Args:
            output_memory: ``(B, S, D)`` projected encoder tokens.
            enc_logits: ``(B, S, C)`` their class logits.
            enc_coords_unsig: ``(B, S, 4)`` their unsigmoided boxes (proposal + box-head delta).

        Returns:
            :class:`SelectedQueries` with K = ``num_queries``.
        """
        if output_memory.shape[:2] != enc_logits.shape[:2] or output_memory.shape[:2] != enc_coords_unsig.shape[:2]:
            raise ValueError("output_memory, enc_logits and enc_coords_unsig must share (B, S); got "
                             f"{tuple(output_memory.shape)}, {tuple(enc_logits.shape)}, {tuple(enc_coords_unsig.shape)}")
        num_tokens = output_memory.shape[1]
        if self.num_queries > num_tokens:
            raise ValueError(f"TopKQuerySelector: num_queries={self.num_queries} exceeds the {num_tokens} encoder "
                             "tokens of this input (use a larger image or fewer queries)")
        indices = torch.topk(enc_logits.max(dim=-1).values, self.num_queries, dim=1).indices
        return SelectedQueries(
            indices=indices,
            queries=_gather_tokens(output_memory, indices).detach(),
            logits=_gather_tokens(enc_logits, indices),
            coords_unsig=_gather_tokens(enc_coords_unsig, indices),
        )

    def extra_repr(self) -> str:
        return f"num_queries={self.num_queries}"

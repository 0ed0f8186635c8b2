"""DVIS's online referring tracker (Zhang et al., ICCV 2023) on the frozen image-mode segmenter.

The segmenter runs MaskDINO's image mode on every frame; the tracker turns its normed output queries
(``DecoderOutput.hs[-1]``, what MaskDINO's heads see, as DVIS takes Mask2Former's ``pred_embds``) into queries in
slot order (slot i = the same instance over the video). Per frame ``t`` (paper §3.1; the details follow the
official ``ReferringTracker`` of ``zhang-tao-whu/DVIS``, ``dvis/video_dvis_modules.py``)::

    perm_t   = Hungarian(1 - cos(Q~seg_{t-1}, Qseg_t))          pre-alignment (identity at t = 0)
    Q~seg_t  = Qseg_t[perm_t]                                   the noisy tracking result
    x_0      = Q~seg_t
    x_{j+1}  = FFN(SA(RCA(x_j, q_j, Qseg_t)))                   j = 0..L-1, L = 6
    RCA(id, q, kv) = LayerNorm(id + MHA(q, kv, kv))             identity = the block input
    q_j      = Qtr_{t-1} (the previous frame's last block output, before the norm)    t > 0
             = x_j                                                                    t = 0 (block 0: Q = K = V)
    outputs  = heads(LayerNorm(x_j)) for every block j          (one norm and one pair of heads shared by all blocks)

K = V are the current frame's *un-reordered* segmenter queries; self-attention and FFN (``dim_feedforward`` 2048,
ReLU) are post-norm, 8 heads, dropout 0. Every block's output is supervised (blocks 0..L-2 as ``aux_outputs``).
Mask logits are ``einsum(mask_embed(LayerNorm(x)), mask_features)`` with the segmenter's mask features.

Choices and differences from the official code (each stated where it is made):

* **Class head: sigmoid, C outputs, the project's focal loss** (DVIS: softmax over C+1 with a no-object weight of
  0.1). The project's matcher, criterion and post-processor score with per-class sigmoids (the post-processor
  averages sigmoid probabilities over the frames), so a softmax head would need its own matcher cost, loss and
  scoring. With the focal loss there is no no-object column: an unmatched slot is a negative for every class, and
  the role of DVIS's ``eos_coef = 0.1`` (down-weighting the many no-object terms) is played by the focal
  modulation ``p^gamma`` and ``1 - alpha`` (0.75) on the negatives; ``eos_coef`` stays in the criterion (its
  ``empty_weight`` buffer is only read by the softmax variant). The bias starts at the focal prior
  ``-log((1 - pi) / pi)`` (RetinaNet) so that the initial loss is not dominated by the ``N x C`` negatives.
* **Pre-alignment orientation.** DVIS's ``match_embds`` builds the cost as (previous x current) and then solves
  its transpose, so the index it applies (``cur[indices]``) is the *inverse* of the assignment; DVIS++
  (``zhang-tao-whu/DVIS_Plus``, ``dvis_Plus/noiser.py``) builds (current x previous) and gets the assignment. They
  agree when the permutation is its own inverse (the common case: the frozen segmenter keeps most slots in
  place). Here the assignment itself is applied (slot i gets the current query matched to previous slot i), as
  the paper's Eq. (1) says and DVIS++ does.
* **Batch.** DVIS matches batch element 0 and applies its permutation to the whole batch (it trains with one clip
  per GPU); here every video of the batch is matched on its own (one host copy for the batch).
* **Guided matching** (paper Eq. 3): while ``iteration < guided_matching_iters`` the training output carries
  ``match_outputs``, the frozen segmenter's final predictions re-ordered by the same permutation as the tracker's
  initial queries (DVIS's ``reset_image_output_order``), and the criterion matches on them
  (:class:`~local2global.modeling.criteria.video_criterion.VideoSetCriterion`); afterwards on the tracker's own final
  predictions. The iteration is detectron2's ``get_event_storage().iter`` (DVIS counts its forward calls); outside
  a trainer (no event storage) it is taken as 0, i.e. guided when ``guided_matching_iters > 0``. The recipes set
  ``guided_matching_iters`` to half of ``train.max_iter`` (DVIS: ``iter < max_iter // 2``). DVIS matches each
  auxiliary block on its own once guided matching ends; the project's criterion reuses the final assignment for
  every block (match once per track), so the auxiliary blocks follow the final one.
* **DVIS++ query noise** (``query_noise``; off by default as in DVIS): in training, at ``t > 0`` and with
  probability ``noise_ratio`` per video and frame, the initial queries are replaced by a corrupted version of the
  current (un-reordered) queries: ``"rs"`` a random shuffle, ``"wa"`` a per-slot random convex blend
  ``w q + (1 - w) q[shuffle]``, ``"cc"`` the first ``k`` channels of ``q`` and the rest from ``q[shuffle]``
  (``k`` uniform per slot). The slot's permutation (what the guided matching and the next frame's pre-alignment
  see) is the shuffled index where the corruption dominates (``w < 0.5``, ``k < D / 2``; always for ``"rs"``),
  as in DVIS++'s ``Noiser``. The random draws are made on the host, next to the Hungarian matching.
* **Gradient through time.** The previous frame's output is carried without ``detach`` in training (DVIS keeps
  the whole clip in one graph); at inference nothing is recorded.
* **Boxes.** ``pred_boxes`` is Mask2Box of the tracker's final masks (an empty mask keeps the re-ordered
  segmenter box): the criterion has no box loss, the post-processor and the streaming output read the boxes.

The state is the previous frame's last block output and its re-ordered segmenter queries: ``2 x N x D`` per
video, flat over the video.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment
import torch
from torch import Tensor, nn
import torch.nn.functional as F

from local2global.modeling.segmenter.deformable_decoder import MLP

from .base import DecoderQueries, FrameContext, Tracker, frame_boxes, image_mode_queries

__all__ = ["DVISTracker", "DVISState", "ReferringBlock", "ReferringCrossAttention", "QUERY_NOISE_MODES",
           "scaled_iterations"]

logger = logging.getLogger(__name__)

#: DVIS++'s query-noise modes (``None``: no noise, DVIS).
QUERY_NOISE_MODES = ("rs", "wa", "cc")
#: Focal-loss prior probability of the class head's bias (RetinaNet's pi).
DEFAULT_CLASS_PRIOR_PROB = 0.01
#: Layers of the mask-embedding MLP (Mask2Former's / DVIS's ``MLP(d, d, mask_dim, 3)``).
MASK_EMBED_LAYERS = 3
#: A "wa" / "cc" corruption dominates a slot (its index becomes the shuffled one) below this mixing fraction.
NOISE_DOMINANCE = 0.5


def scaled_iterations(max_iter, fraction) -> int:
    """``floor(max_iter * fraction)``: an iteration count given as a fraction of the schedule.

    Registered as the OmegaConf resolver ``${l2g_iters:${train.max_iter},0.5}`` so that a recipe's switch point
    follows ``train.max_iter=...`` overrides (OmegaConf interpolation has no arithmetic).
    """
    return int(math.floor(int(max_iter) * float(fraction)))


def _register_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("l2g_iters"):
        OmegaConf.register_new_resolver("l2g_iters", scaled_iterations)


_register_resolver()


def _xavier_(module: nn.Module) -> None:
    """DVIS's (and Mask2Former's) init of its attention / FFN layers: Xavier-uniform on every matrix."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class ReferringCrossAttention(nn.Module):
    """Referring cross-attention (paper Eq. 2), post-norm: ``LayerNorm(identity + MHA(query, kv, kv))``.

    With ``identity = query`` it is standard cross-attention (the paper's Table 7 ablation).
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_(self)

    def forward(self, identity: Tensor, query: Tensor, kv: Tensor) -> Tensor:
        """``identity (B, N, D)``, ``query (B, N, D)``, ``kv (B, M, D)`` -> ``(B, N, D)``."""
        out = self.attn(query, kv, kv, need_weights=False)[0]
        return self.norm(identity + self.dropout(out))


class ReferringBlock(nn.Module):
    """One denoising block: referring cross-attention -> self-attention -> FFN, each post-norm with a residual.

    Args:
        d_model: ``D``.
        nhead: attention heads.
        dim_feedforward: FFN hidden width.
        dropout: dropout of attention and FFN (DVIS: 0).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.cross_attn = ReferringCrossAttention(d_model, nhead, dropout)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm_sa = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_(self.self_attn)
        _xavier_(self.linear1)
        _xavier_(self.linear2)

    def forward(self, identity: Tensor, query: Tensor, kv: Tensor) -> Tensor:
        """``identity (B, N, D)`` (the block input), ``query (B, N, D)``, ``kv (B, M, D)`` -> ``(B, N, D)``."""
        x = self.cross_attn(identity, query, kv)
        x = self.norm_sa(x + self.dropout(self.self_attn(x, x, x, need_weights=False)[0]))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm_ffn(x + self.dropout(ffn))


@dataclass
class DVISState:
    """What is carried from frame t-1 to frame t: ``2 x N x D`` per video.

    Attributes:
        output: ``(B, N, D)`` the last block's output at t-1 (before the heads' norm): the referring query.
        embeds: ``(B, N, D)`` the segmenter's normed queries of t-1 in slot order (the pre-alignment target).
    """

    output: Tensor
    embeds: Tensor


def _gather(x: Tensor, perm: Tensor) -> Tensor:
    """``x (B, N, ...)`` gathered along dim 1 by ``perm (B, N)``."""
    idx = perm.view(*perm.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, idx)


class DVISTracker(Tracker):
    """DVIS's online referring tracker (see the module docstring).

    Args:
        num_classes: ``C`` (sigmoid class head).
        num_queries: ``N`` (checked against the model's).
        hidden_dim: ``D`` (the segmenter's width; checked against the decoder's).
        mask_dim: width of the mask embedding = channels of the mask features (default ``hidden_dim``).
        num_layers: referring blocks (DVIS: 6).
        nhead: attention heads (DVIS: 8).
        dim_feedforward: FFN width (DVIS: 2048).
        dropout: DVIS: 0.
        prealign: Hungarian pre-alignment of the current queries (False: the un-matched ``Qseg``, the paper's
            Table 6 row; the slots are then the segmenter's).
        guided_matching_iters: training iterations during which the criterion matches on the segmenter's
            predictions (``match_outputs``); DVIS: ``max_iter // 2``. 0 = never.
        query_noise: ``None`` or one of ``"rs"``, ``"wa"``, ``"cc"`` (DVIS++'s noise, training only).
        noise_ratio: probability of the noise per video and frame (DVIS++: 0.5).
        class_prior_prob: focal prior of the class bias.
        aux_at_inference: also predict every block's class and mask at inference (``aux_outputs``; the parity
            check compares them). Off by default: at inference only the last block's predictions are used, and the
            other five blocks' mask heads would be most of the tracker's cost (at N = 300, 360×640: 10.1 of the
            tracker's GMACs with them, see ``benchmarks/RESULTS.md``).
    """

    family = "association"
    trains_segmenter = False

    def __init__(self, num_classes: int, *, num_queries: int = 300, hidden_dim: int = 256,
                 mask_dim: Optional[int] = None, num_layers: int = 6, nhead: int = 8, dim_feedforward: int = 2048,
                 dropout: float = 0.0, prealign: bool = True, guided_matching_iters: int = 0,
                 query_noise: Optional[str] = None, noise_ratio: float = 0.5,
                 class_prior_prob: float = DEFAULT_CLASS_PRIOR_PROB, aux_at_inference: bool = False):
        super().__init__()
        self.aux_at_inference = aux_at_inference
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if query_noise is not None and query_noise not in QUERY_NOISE_MODES:
            raise ValueError(f"query_noise must be None or one of {QUERY_NOISE_MODES}, got {query_noise!r}")
        if not 0.0 <= noise_ratio <= 1.0:
            raise ValueError(f"noise_ratio must be in [0, 1], got {noise_ratio}")
        if guided_matching_iters < 0:
            raise ValueError(f"guided_matching_iters must be >= 0, got {guided_matching_iters}")
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.mask_dim = hidden_dim if mask_dim is None else mask_dim
        self.num_layers = num_layers
        self.prealign = prealign
        self.guided_matching_iters = int(guided_matching_iters)
        self.query_noise = query_noise
        self.noise_ratio = float(noise_ratio)
        self.blocks = nn.ModuleList(ReferringBlock(hidden_dim, nhead, dim_feedforward, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes)
        nn.init.constant_(self.class_embed.bias, -math.log((1.0 - class_prior_prob) / class_prior_prob))
        self.mask_embed = MLP(hidden_dim, hidden_dim, self.mask_dim, MASK_EMBED_LAYERS)
        self._warned_no_storage = False

    # ------------------------------------------------------------------ what the meta-architecture computes
    def needs_local_queries(self, state) -> bool:
        return True

    def needs_local_boxes(self, state) -> bool:
        return True

    def decoder_input(self, state, ctx: FrameContext) -> DecoderQueries:
        return image_mode_queries(ctx)

    # ------------------------------------------------------------------ guided matching
    def current_iteration(self) -> Optional[int]:
        """detectron2's training iteration (``get_event_storage().iter``), ``None`` outside an ``EventStorage``."""
        from detectron2.utils.events import get_event_storage

        try:
            return int(get_event_storage().iter)
        except (AssertionError, IndexError):  # no storage (IndexError when asserts are compiled out)
            return None

    def guided_matching_active(self) -> bool:
        """Whether this training step's criterion matches on the segmenter's predictions (paper Eq. 3)."""
        if not self.training or self.guided_matching_iters <= 0:
            return False
        iteration = self.current_iteration()
        if iteration is None:
            if not self._warned_no_storage:
                logger.info("DVISTracker: no detectron2 EventStorage, guided matching takes the iteration as 0")
                self._warned_no_storage = True
            iteration = 0
        return iteration < self.guided_matching_iters

    # ------------------------------------------------------------------ the step
    def update(self, state: Optional[DVISState], ctx: FrameContext, queries: DecoderQueries, decoded
               ) -> Tuple[DVISState, Dict]:
        embeds = decoded.hs[-1].detach()  # (B, N, D) normed segmenter queries (frozen: no graph anyway)
        perm, identity = self.initial_queries(state, embeds)
        outs = self.forward_blocks(identity, embeds, None if state is None else state.output)
        # every block is supervised in training; at inference only the last block's predictions are used
        headed = outs if (self.training or self.aux_at_inference) else outs[-1:]
        stacked = self.norm(torch.stack(headed))  # (L', B, N, D)
        logits = self.class_embed(stacked)  # (L', B, N, C)
        mask_embeds = self.mask_embed(stacked)  # (L', B, N, Dm)
        masks = torch.einsum("lbnc,bchw->lbnhw", mask_embeds, ctx.mask_features)
        seg_boxes = _gather(decoded.pred_boxes[-1].detach(), perm)
        outputs: Dict = {
            "pred_logits": logits[-1],
            "pred_masks": masks[-1],
            "pred_boxes": frame_boxes(masks[-1], seg_boxes),
            "aux_outputs": [{"pred_logits": logits[i], "pred_masks": masks[i]} for i in range(len(headed) - 1)],
        }
        if ctx.want_mask_embeds:
            outputs["mask_embeds"] = mask_embeds[-1]
        if self.guided_matching_active():
            outputs["match_outputs"] = {
                "pred_logits": _gather(decoded.pred_logits[-1].detach(), perm),
                "pred_masks": _gather(decoded.pred_masks[-1].detach(), perm),
                "pred_boxes": seg_boxes,
            }
        return DVISState(outs[-1], _gather(embeds, perm)), outputs

    def forward_blocks(self, identity: Tensor, embeds: Tensor, reference: Optional[Tensor]) -> List[Tensor]:
        """The referring blocks on one frame.

        Args:
            identity: ``(B, N, D)`` block 0's identity (the pre-aligned, possibly noised, current queries).
            embeds: ``(B, N, D)`` the current frame's un-reordered segmenter queries (K = V of every block).
            reference: ``(B, N, D)`` the previous frame's last block output (Q of every block), ``None`` on the
                first frame (Q = the block input).

        Returns:
            L tensors ``(B, N, D)``, the blocks' outputs before the heads' norm.
        """
        x, outs = identity, []
        for block in self.blocks:
            x = block(x, x if reference is None else reference, embeds)
            outs.append(x)
        return outs

    def initial_queries(self, state: Optional[DVISState], embeds: Tensor) -> Tuple[Tensor, Tensor]:
        """Pre-alignment (and DVIS++'s noise): ``(perm (B, N) int64, identity (B, N, D))``.

        ``perm[b, i]`` is the current query that slot i starts from; ``identity = embeds[perm]`` unless the noise
        blends in other queries. Host work (Hungarian, random draws) uses one device-to-host copy of the costs.
        """
        batch, num, dim = embeds.shape
        device = embeds.device
        if state is None:
            perm = torch.arange(num, device=device).unsqueeze(0).expand(batch, -1)
            return perm, embeds
        if self.prealign:
            prev = F.normalize(state.embeds.float(), dim=-1)
            cur = F.normalize(embeds.float(), dim=-1)
            host_perm = _assignments(1.0 - torch.bmm(prev, cur.transpose(1, 2)))
        else:
            host_perm = np.tile(np.arange(num, dtype=np.int64), (batch, 1))
        noise = self._draw_noise(batch, num, dim) if (self.training and self.query_noise is not None) else None
        if noise is None:
            perm = torch.from_numpy(host_perm).to(device, non_blocking=True)
            return perm, _gather(embeds, perm)
        active, shuffle, weight, noise_perm = noise
        host_perm = np.where(active[:, None], noise_perm, host_perm)
        perm = torch.from_numpy(host_perm).to(device, non_blocking=True)
        identity = _gather(embeds, perm)
        if self.query_noise != "rs":
            shuffled = _gather(embeds, torch.from_numpy(shuffle).to(device, non_blocking=True))
            w = torch.from_numpy(weight).to(device=device, dtype=embeds.dtype, non_blocking=True)
            blended = embeds * w + shuffled * (1.0 - w)
            identity = torch.where(torch.from_numpy(active).to(device)[:, None, None], blended, identity)
        return perm, identity

    def _draw_noise(self, batch: int, num: int, dim: int):
        """DVIS++'s noise draws on the host: ``(active (B,), shuffle (B, N), weight (B, N, 1 or D), perm (B, N))``."""
        active = torch.rand(batch) < self.noise_ratio
        if not bool(active.any()):
            return None
        shuffle = torch.stack([torch.randperm(num) for _ in range(batch)])
        identity = torch.arange(num).expand(batch, -1)
        if self.query_noise == "rs":
            weight = torch.zeros(batch, num, 1)
            perm = shuffle
        elif self.query_noise == "wa":
            weight = torch.rand(batch, num, 1)
            perm = torch.where(weight[..., 0] < NOISE_DOMINANCE, shuffle, identity)
        else:  # "cc": the first k channels from the query itself, the rest from the shuffled one
            k = torch.randint(0, dim, (batch, num, 1))
            weight = (torch.arange(dim).view(1, 1, dim) < k).float()
            perm = torch.where(k[..., 0] < int(dim * NOISE_DOMINANCE), shuffle, identity)
        return active.numpy(), shuffle.numpy(), weight.numpy(), perm.numpy()

    def extra_parameter_count(self) -> int:
        """Every parameter of the tracker (blocks, norm, heads): DVIS's Table 9 "tracker" figure."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (f"num_layers={self.num_layers}, prealign={self.prealign}, "
                f"guided_matching_iters={self.guided_matching_iters}, query_noise={self.query_noise!r}, "
                f"noise_ratio={self.noise_ratio}")


def _assignments(cost: Tensor) -> np.ndarray:
    """``(B, N, N)`` cost (previous slot x current query) -> ``(B, N)`` int64 host array: slot i's query."""
    host = cost.detach().float().cpu().numpy()  # one copy for the whole batch
    host = np.where(np.isnan(host), 0.0, host)  # DVIS: a zero-norm query gives NaN similarities
    perms = np.empty(host.shape[:2], dtype=np.int64)
    for b, c in enumerate(host):
        rows, cols = linear_sum_assignment(c)
        perms[b, rows] = cols
    return perms

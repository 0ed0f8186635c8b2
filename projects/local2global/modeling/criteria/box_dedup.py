"""InsPro's box de-duplication loss (He et al., 2022, Eq. 4) as a clip-level term of the video criterion.

For a ground-truth box ``b`` of frame t and the k unmatched predicted boxes ``b_neg^1..k`` of that frame with the
largest IoU with ``b``::

    L_dedup(b) = 1/k * sum_i max(beta - C^2(b, b_neg^i) / D^2(b), 0)

with ``C`` the distance between the box centres and ``D`` the diagonal of ``b``; beta = 0.1, k = 5, weight 1
(paper §3.4). It pushes the unmatched proposals near an object away from it, so that duplicates do not follow the
object along the propagation and free query-proposal pairs stay spread out to pick up new objects.

Readings:

* **unmatched** at frame t = the slots not bound to a track seen at or before t by the match-once assignment (a
  slot bound to a track keeps carrying it, also while the track is absent, so it is never a negative); slots
  bound to tracks that appear later are negatives until then;
* when fewer than k slots are unmatched, the mean runs over those there are;
* boxes are normalised cxcywh, the coordinates of the box L1 / GIoU losses;
* the per-box terms are summed over the valid ground-truth boxes of the supervised (clip, frame) pairs and
  divided by the criterion's ``num_masks`` (the number of those boxes): the box losses' normalisation, so the
  weight 1 means "one more box term"; only the final decoder layer unless ``aux=True`` (then also one term per
  earlier stage, ``loss_dedup_{i}``).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn

from local2global.layers.box_ops import box_cxcywh_to_xyxy

__all__ = ["BoxDedupLoss", "box_dedup_per_gt", "box_iou_cxcywh", "DEDUP_BETA", "DEDUP_TOPK", "DEDUP_WEIGHT"]

#: The paper's margin, number of negatives per ground-truth box and loss weight.
DEDUP_BETA = 0.1
DEDUP_TOPK = 5
DEDUP_WEIGHT = 1.0
# Lower bound of a degenerate (zero-size) ground-truth box's squared diagonal and of IoU unions.
_EPS = 1e-6


def box_iou_cxcywh(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``(n, m)`` IoU of normalised cxcywh boxes ``(n, 4)`` and ``(m, 4)``."""
    a, b = box_cxcywh_to_xyxy(boxes1), box_cxcywh_to_xyxy(boxes2)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=_EPS)


def box_dedup_per_gt(gt_boxes: Tensor, neg_boxes: Tensor, k: int = DEDUP_TOPK, beta: float = DEDUP_BETA) -> Tensor:
    """Eq. 4 for every ground-truth box.

    Args:
        gt_boxes: ``(n, 4)`` normalised cxcywh ground-truth boxes.
        neg_boxes: ``(m, 4)`` unmatched predicted boxes (gradients flow through their centres).
        k: negatives per ground-truth box (``min(k, m)`` are used).
        beta: margin on the normalised squared centre distance.

    Returns:
        ``(n,)`` the mean over the chosen negatives of ``max(beta - C^2 / D^2, 0)`` (zeros when ``m == 0``).
    """
    if neg_boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
        return neg_boxes.sum() * 0.0 + gt_boxes.new_zeros(gt_boxes.shape[0])
    k_eff = min(k, neg_boxes.shape[0])
    with torch.no_grad():
        iou = box_iou_cxcywh(gt_boxes, neg_boxes)
        top = iou.topk(k_eff, dim=1).indices  # (n, k)
    chosen = neg_boxes[top]  # (n, k, 4)
    centre_d2 = ((chosen[..., :2] - gt_boxes[:, None, :2]) ** 2).sum(-1)
    diag2 = (gt_boxes[:, 2:] ** 2).sum(-1).clamp(min=_EPS)
    return (beta - centre_d2 / diag2[:, None]).clamp(min=0).mean(dim=1)


class BoxDedupLoss(nn.Module):
    """Clip-level box de-duplication term (``VideoSetCriterion(extra_terms=[BoxDedupLoss()])``).

    Args:
        weight: loss weight (paper: 1).
        beta: margin (paper: 0.1).
        k: negatives per ground-truth box (paper: 5).
        aux: also one term per earlier decoder stage (``aux_outputs``), keys ``loss_dedup_{i}``.
    """

    needs_mask_embeds = False

    def __init__(self, weight: float = DEDUP_WEIGHT, beta: float = DEDUP_BETA, k: int = DEDUP_TOPK,
                 aux: bool = False):
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.weight = weight
        self.beta = beta
        self.k = k
        self.aux = aux

    def forward(self, outputs_per_frame: List[Dict], targets: List[List[Dict[str, Tensor]]], assignment: Dict
                ) -> Dict[str, Tensor]:
        """Weighted ``loss_dedup`` (and ``loss_dedup_{i}`` with ``aux``).

        Args:
            outputs_per_frame: T frame outputs with ``pred_boxes (B, N, 4)`` (and ``aux_outputs``).
            targets: B x T target dicts (``boxes (n, 4)``, ``valid (n,)``).
            assignment: the criterion's ``last_assignment`` (``slots``, ``first_frame``: per clip ``(n,)`` CPU;
                ``supervised (B, T)``; ``num_masks``).
        """
        num_stages = len(outputs_per_frame[0].get("aux_outputs", []) or []) if self.aux else 0
        stage_boxes = [[o["pred_boxes"] for o in outputs_per_frame]]
        stage_boxes += [[o["aux_outputs"][i]["pred_boxes"] for o in outputs_per_frame] for i in range(num_stages)]
        negatives = self._negatives(outputs_per_frame[0]["pred_boxes"].shape[1], targets, assignment)
        out = {}
        for s, boxes in enumerate(stage_boxes):
            key = "loss_dedup" if s == 0 else f"loss_dedup_{s - 1}"
            out[key] = self.weight * self._stage(boxes, targets, assignment, negatives)
        return out

    @staticmethod
    def _negatives(num_slots: int, targets, assignment) -> Dict:
        """``{(b, t): (m,) int64 CPU}`` unmatched slots of every supervised (clip, frame)."""
        supervised = assignment["supervised"]
        result = {}
        for b, clip in enumerate(targets):
            slot, first = assignment["slots"][b], assignment["first_frame"][b]
            for t in range(len(clip)):
                if not bool(supervised[b, t]):
                    continue
                seen = (slot >= 0) & (first >= 0) & (first <= t)
                matched = torch.zeros(num_slots, dtype=torch.bool)
                matched[slot[seen]] = True
                result[(b, t)] = torch.nonzero(~matched).flatten()
        return result

    def _stage(self, boxes_per_frame: Sequence[Tensor], targets, assignment, negatives: Dict) -> Tensor:
        total = boxes_per_frame[-1].sum() * 0.0  # stays in the graph when no frame has a ground-truth box
        for (b, t), neg_idx in negatives.items():
            pred = boxes_per_frame[t][b]
            tgt = targets[b][t]
            gt = tgt["boxes"].to(pred)
            valid = tgt["valid"].to(device=pred.device, dtype=torch.bool) if "valid" in tgt else \
                torch.ones(gt.shape[0], dtype=torch.bool, device=pred.device)
            per_gt = box_dedup_per_gt(gt, pred[neg_idx.to(pred.device)], self.k, self.beta)
            # invalid (absent) tracks carry placeholder boxes: masked out, not indexed (no host sync)
            total = total + torch.where(valid, per_gt, torch.zeros_like(per_gt)).sum()
        return total / assignment["num_masks"]

    def extra_repr(self) -> str:
        return f"weight={self.weight}, beta={self.beta}, k={self.k}, aux={self.aux}"

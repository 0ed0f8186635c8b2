"""Hungarian matcher with MaskDINO's matching costs.

Cost of assigning prediction ``q`` to ground truth ``t`` (MaskDINO / detrex ``HungarianMatcher``):

* class: focal-style cost ``pos - neg`` at the target's class, with ``p = sigmoid(logit)``,
  ``pos = alpha (1-p)^gamma (-log(p + eps))``, ``neg = (1-alpha) p^gamma (-log(1-p + eps))``;
* mask: mean over points of the sigmoid binary cross-entropy;
* dice: ``1 - (2 sum(sigmoid(x) t) + 1) / (sum sigmoid(x) + sum t + 1)`` (sums over points);
* box: L1 distance of normalised ``(cx, cy, w, h)`` boxes;
* giou: ``-GIoU`` with MaskDINO's ``+1e-6`` guarded divisions.

``C = w_mask*mask + w_class*class + w_dice*dice + w_box*box + w_giou*giou`` (summed in this order,
as detrex does, so that the float32 matrix is bitwise reproducible), solved per image with
``scipy.optimize.linear_sum_assignment``.

Mask costs are evaluated on ``num_points`` uniformly random points shared by all masks of an image
(detrex's behaviour), or, with ``num_points=None``, densely on every pixel centre of the prediction
grid with targets bilinearly resized to it (the deterministic mode of the loss fixture).
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple

from scipy.optimize import linear_sum_assignment
import torch
from torch import nn
import torch.nn.functional as F

from local2global.layers.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from local2global.layers.point_sampling import point_sample, rand_on, resize_masks_to_grid

logger = logging.getLogger(__name__)

__all__ = [
    "HungarianMatcher",
    "box_cxcywh_to_xyxy",
    "generalized_box_iou",
    "batch_sigmoid_ce_cost",
    "batch_dice_cost",
    "focal_class_cost",
    "neutralize_stuff_columns",
]

#: Epsilon inside the logs of the focal class cost (detrex MaskDINO at the fixture's commit).
FOCAL_COST_EPS = 1e-5
#: The cost kinds a matcher call may use (detrex's ``cost`` argument).
ALL_COSTS = ("cls", "box", "mask")


def batch_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean-over-points sigmoid BCE.

    Args:
        logits: ``(N, P)`` predicted mask logits at the points.
        targets: ``(M, P)`` target values in ``[0, 1]`` at the same points.

    Returns:
        ``(N, M)`` cost ``(BCE(x, 1) @ t^T + BCE(x, 0) @ (1 - t)^T) / P``.
    """
    num_points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    cost = torch.einsum("nc,mc->nm", pos, targets) + torch.einsum("nc,mc->nm", neg, 1 - targets)
    return cost / num_points


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise dice cost ``1 - (2 s.t + 1) / (sum s + sum t + 1)`` with ``s = sigmoid(logits)``.

    Args:
        logits: ``(N, P)``; targets: ``(M, P)``.

    Returns:
        ``(N, M)``.
    """
    probs = logits.sigmoid()
    numerator = 2 * torch.einsum("nc,mc->nm", probs, targets)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def focal_class_cost(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal-loss-shaped classification cost (detrex/DINO).

    Args:
        logits: ``(N, C)`` class logits.
        labels: ``(M,)`` int64 class indices.

    Returns:
        ``(N, M)`` cost ``pos[:, labels] - neg[:, labels]``.
    """
    prob = logits.sigmoid()
    neg = (1 - alpha) * (prob**gamma) * (-(1 - prob + FOCAL_COST_EPS).log())
    pos = alpha * ((1 - prob) ** gamma) * (-(prob + FOCAL_COST_EPS).log())
    return pos[:, labels] - neg[:, labels]


def neutralize_stuff_columns(cost: torch.Tensor, tgt_is_thing: torch.Tensor) -> torch.Tensor:
    """MaskDINO's panoptic box cost: every stuff column takes the mean box cost of the thing columns.

    A box says little about a stuff region (sky, road: often the whole frame), so MaskDINO drops the box cost of
    stuff targets. It does not zero it: a constant column leaves the assignment unchanged when every target gets a
    query (``N >= M``), and the things' mean keeps stuff targets neither cheaper nor dearer than things when some
    target must stay unmatched. Without thing targets the stuff columns are 0 (MaskDINO's NaN -> 0).

    Computed without host synchronisation (``torch.where``; the mean as a masked sum), so it is safe on CUDA.

    Args:
        cost: ``(N, M)`` box cost (L1 or -GIoU).
        tgt_is_thing: ``(M,)`` bool.

    Returns:
        ``(N, M)``; exactly ``cost`` where the target is a thing.
    """
    thing = tgt_is_thing.to(device=cost.device, dtype=torch.bool)
    count = thing.sum() * cost.shape[0]
    mean = (cost * thing.to(cost.dtype)).sum() / count.clamp(min=1).to(cost.dtype)
    return torch.where(thing[None, :], cost, mean)


class HungarianMatcher(nn.Module):
    """One-to-one assignment between predictions and ground truth with MaskDINO's costs.

    Args:
        cost_class / cost_mask / cost_dice / cost_box / cost_giou: weights of the cost terms
            (MaskDINO: 4, 5, 5, 5, 2).
        num_points: points per mask for the mask costs (12544 in MaskDINO); ``None`` = dense mode.
        focal_alpha / focal_gamma: parameters of the focal class cost.
    """

    def __init__(
        self,
        cost_class: float = 4.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        cost_box: float = 5.0,
        cost_giou: float = 2.0,
        num_points: Optional[int] = 12544,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("cost_class, cost_mask and cost_dice cannot all be 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.cost_box = cost_box
        self.cost_giou = cost_giou
        self.num_points = num_points
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def cost_terms(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        pred_boxes: torch.Tensor,
        tgt_labels: torch.Tensor,
        tgt_masks: torch.Tensor,
        tgt_boxes: torch.Tensor,
        cost: Sequence[str] = ALL_COSTS,
        generator: Optional[torch.Generator] = None,
        tgt_is_thing: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """The unweighted cost terms of one image.

        Args:
            pred_logits: ``(N, C)``; pred_masks: ``(N, h, w)`` logits; pred_boxes: ``(N, 4)`` cxcywh.
            tgt_labels: ``(M,)`` int64; tgt_masks: ``(M, H, W)`` bool/float (padded image size);
            tgt_boxes: ``(M, 4)`` normalised cxcywh.
            cost: which of ``"cls"``, ``"box"``, ``"mask"`` to compute (others are scalar 0).
            generator: random source of the shared sampling points (point mode only).
            tgt_is_thing: ``(M,)`` bool (panoptic targets): stuff columns of the box costs get the things' mean
                (:func:`neutralize_stuff_columns`); ``None`` (instance targets) leaves them untouched.

        Returns:
            dict with ``cost_class``, ``cost_mask``, ``cost_dice``, ``cost_bbox``, ``cost_giou``,
            each ``(N, M)`` (or a 0-d zero when the term is switched off, as detrex).
        """
        zero = torch.zeros((), dtype=pred_boxes.dtype, device=pred_boxes.device)
        terms = {}
        if "box" in cost:
            terms["cost_bbox"] = torch.cdist(pred_boxes, tgt_boxes.to(pred_boxes), p=1)
            terms["cost_giou"] = -generalized_box_iou(
                box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes.to(pred_boxes))
            )
            if tgt_is_thing is not None:
                terms["cost_bbox"] = neutralize_stuff_columns(terms["cost_bbox"], tgt_is_thing)
                terms["cost_giou"] = neutralize_stuff_columns(terms["cost_giou"], tgt_is_thing)
        else:
            terms["cost_bbox"] = zero
            terms["cost_giou"] = zero
        terms["cost_class"] = focal_class_cost(pred_logits, tgt_labels, self.focal_alpha, self.focal_gamma)
        if "mask" in cost:
            out_mask = pred_masks
            tgt_mask = tgt_masks.to(out_mask)
            if self.num_points is None:
                tgt_points = resize_masks_to_grid(tgt_mask, out_mask.shape[-2:])
                out_points = out_mask.flatten(1)
            else:
                # One set of uniformly random points shared by every mask of the image.
                coords = rand_on((1, self.num_points, 2), out_mask, generator)
                tgt_points = point_sample(
                    tgt_mask[:, None], coords.repeat(tgt_mask.shape[0], 1, 1), align_corners=False
                ).squeeze(1)
                out_points = point_sample(
                    out_mask[:, None], coords.repeat(out_mask.shape[0], 1, 1), align_corners=False
                ).squeeze(1)
            with torch.autocast(device_type=out_mask.device.type, enabled=False):
                out_points = out_points.float()
                tgt_points = tgt_points.float()
                terms["cost_mask"] = batch_sigmoid_ce_cost(out_points, tgt_points)
                terms["cost_dice"] = batch_dice_cost(out_points, tgt_points)
        else:
            terms["cost_mask"] = zero
            terms["cost_dice"] = zero
        return terms

    def combine(self, terms: Dict[str, torch.Tensor], num_queries: int) -> torch.Tensor:
        """Weighted total ``(N, M)`` in detrex's summation order (mask, class, dice, box, giou)."""
        total = (
            self.cost_mask * terms["cost_mask"]
            + self.cost_class * terms["cost_class"]
            + self.cost_dice * terms["cost_dice"]
            + self.cost_box * terms["cost_bbox"]
            + self.cost_giou * terms["cost_giou"]
        )
        return total.reshape(num_queries, -1)

    @torch.no_grad()
    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        pred_boxes: torch.Tensor,
        tgt_labels: torch.Tensor,
        tgt_masks: torch.Tensor,
        tgt_boxes: torch.Tensor,
        cost: Sequence[str] = ALL_COSTS,
        generator: Optional[torch.Generator] = None,
        tgt_is_thing: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Weighted matching cost of one image, ``(N, M)`` (see :meth:`cost_terms` for the args)."""
        terms = self.cost_terms(
            pred_logits, pred_masks, pred_boxes, tgt_labels, tgt_masks, tgt_boxes, cost, generator, tgt_is_thing
        )
        return self.combine(terms, pred_logits.shape[0])

    @staticmethod
    def solve(cost: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``linear_sum_assignment`` on a ``(N, M)`` cost; returns int64 (row idx ascending, col idx)."""
        if cost.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty.clone()
        return HungarianMatcher._assign_on_host(cost.detach().float().cpu())  # numpy has no bf16

    @staticmethod
    def _assign_on_host(cost: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """scipy's assignment of a float32 CPU cost ``(N, M)`` as two int64 tensors."""
        if cost.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty.clone()
        rows, cols = linear_sum_assignment(cost)
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)

    @staticmethod
    def solve_batch(costs: Sequence[torch.Tensor]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`solve` of every ``(N_b, M_b)`` cost, with one device-to-host copy for the whole batch.

        Each ``.cpu()`` of a CUDA tensor waits for the device (a host synchronisation), so the costs are
        flattened, concatenated on their device and copied once; the assignments are those of :meth:`solve`
        image by image (same values, float32, same scipy call).
        """
        if not costs:
            return []
        flat = [c.detach().float().reshape(-1) for c in costs]
        host = torch.cat(flat).cpu() if len(flat) > 1 else flat[0].cpu()
        out = []
        for cost, piece in zip(costs, host.split([f.numel() for f in flat])):
            out.append(HungarianMatcher._assign_on_host(piece.view(cost.shape)))
        return out

    @torch.no_grad()
    def forward(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        cost: Sequence[str] = ALL_COSTS,
        generator: Optional[torch.Generator] = None,
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Match every image of a batch.

        Args:
            outputs: ``pred_logits (B, N, C)``, ``pred_masks (B, N, h, w)``, ``pred_boxes (B, N, 4)``.
            targets: B dicts with ``labels (M,)``, ``masks (M, H, W)``, ``boxes (M, 4)`` and, for panoptic
                targets, ``is_thing (M,)`` bool (no box cost for stuff, see :func:`neutralize_stuff_columns`).
            cost: cost kinds to use (detrex's default: all three).
            generator: random source of the mask-cost points.

        Returns:
            per image ``(pred_idx, tgt_idx)`` int64 CPU tensors of length ``min(N, M)``, prediction
            indices in ascending order (scipy's row order), as detrex.
        """
        costs = []
        for b in range(outputs["pred_logits"].shape[0]):
            tgt = targets[b]
            total = self.cost_matrix(
                outputs["pred_logits"][b],
                outputs["pred_masks"][b],
                outputs["pred_boxes"][b],
                tgt["labels"],
                tgt["masks"],
                tgt["boxes"],
                cost=cost,
                generator=generator,
                tgt_is_thing=tgt.get("is_thing"),
            )
            costs.append(total)
        return self.solve_batch(costs)  # one host copy for the batch, not one per image

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
            f"cost_box={self.cost_box}, cost_giou={self.cost_giou}, num_points={self.num_points}"
        )

"""MaskDINO's image-level set criterion (detrex ``SetCriterion`` + ``WeightedCriterion``).

Losses of one prediction stage, for matched pairs ``(query q, target t)`` and normaliser ``n``
(number of ground-truth instances in the batch, averaged over processes, clamped at 1):

* ``loss_ce``: sigmoid focal loss (alpha 0.25, gamma 2) against one-hot targets without a
  no-object column (unmatched queries are negatives for every class), summed over all
  ``B*Q*C`` entries and divided by ``n`` (detrex writes it ``mean over queries * Q``);
* ``loss_mask``: mean-over-points sigmoid BCE per pair, summed, ``/ n``;
* ``loss_dice``: ``1 - (2 s.t + 1) / (sum s + sum t + 1)`` per pair, summed, ``/ n``;
* ``loss_bbox``: L1 of normalised cxcywh boxes, summed, ``/ n``;
* ``loss_giou``: ``1 - GIoU`` per pair, summed, ``/ n``.

Stages: final layer (no suffix), ``aux_outputs[i]`` (suffix ``_{i}``; aux 0 is the initial
prediction), ``interm_outputs`` (suffix ``_interm``), each matched independently; denoising
queries from ``mask_dict`` (suffix ``_dn`` / ``_dn_{i}``) use the known query->target layout.
Mask terms use importance-sampled points (``num_points``) or, with ``num_points=None``, every pixel
of the prediction grid against bilinearly resized targets (deterministic; the fixture's mode).

The returned dict is unweighted; ``weight_dict`` holds the weights (MaskDINO multiplies in its
meta-architecture).
"""

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.distributed as dist
import torch.nn.functional as F

from local2global.layers.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from local2global.layers.point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    resize_masks_to_grid,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SetCriterion",
    "sigmoid_focal_loss",
    "dice_loss",
    "sigmoid_ce_loss",
    "build_weight_dict",
    "reduce_num_instances",
    "concat_masks_padded",
]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]

BASE_LOSS_KEYS = {
    "labels": ("loss_ce",),
    "masks": ("loss_mask", "loss_dice"),
    "boxes": ("loss_bbox", "loss_giou"),
}
DN_LOSSES = {"seg": ("labels", "masks", "boxes"), "standard": ("labels", "boxes"), "no": ()}


def sigmoid_focal_loss(
    inputs: torch.Tensor, targets: torch.Tensor, num_boxes: float, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """RetinaNet focal loss, reduced as detrex: ``loss.mean(1).sum() / num_boxes``.

    Args:
        inputs: ``(B, Q, C)`` logits; targets: same shape in ``{0, 1}``.
        num_boxes: normaliser.

    Returns:
        0-d tensor (the caller multiplies by ``Q`` to undo the mean over queries).
    """
    prob = inputs.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_boxes


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over pairs of ``1 - (2 s.t + 1) / (sum s + sum t + 1)``, ``/ num_masks``.

    Args:
        inputs: ``(R, P)`` logits at the points; targets: ``(R, P)`` in ``[0, 1]``.
    """
    probs = inputs.sigmoid().flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over pairs of the mean-over-points sigmoid BCE, ``/ num_masks``. Shapes ``(R, P)``."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def build_weight_dict(
    class_weight: float = 4.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    box_weight: float = 5.0,
    giou_weight: float = 2.0,
    dn: str = "no",
    dec_layers: int = 9,
) -> Dict[str, float]:
    """MaskDINO's ``WeightedCriterion`` weight dict, same keys and order.

    Base keys, then ``_interm``, then (with denoising) ``_dn`` copies, then ``_{i}`` copies of
    everything for ``i < dec_layers``. The ``_interm_{i}`` keys this produces are never used
    (an artefact of the construction order in detrex) but kept for identical dicts.
    """
    weights = {
        "loss_ce": class_weight,
        "loss_mask": mask_weight,
        "loss_dice": dice_weight,
        "loss_bbox": box_weight,
        "loss_giou": giou_weight,
    }
    weights.update({k + "_interm": v for k, v in list(weights.items())})
    if dn == "standard":
        weights.update({k + "_dn": v for k, v in list(weights.items()) if k not in ("loss_mask", "loss_dice")})
    elif dn == "seg":
        weights.update({k + "_dn": v for k, v in list(weights.items())})
    aux = {}
    for i in range(dec_layers):
        aux.update({k + f"_{i}": v for k, v in weights.items()})
    weights.update(aux)
    return weights


def reduce_num_instances(count: float, device: torch.device) -> float:
    """MaskDINO's normaliser: instance count averaged over processes, clamped at 1, as a float.

    Args:
        count: local number of ground-truth instances.
        device: device for the all-reduce (the loss tensors' device).
    """
    num = torch.as_tensor([float(count)], dtype=torch.float, device=device)
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        world_size = dist.get_world_size()
    return torch.clamp(num / world_size, min=1).item()


def concat_masks_padded(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-image ``(n_i, H_i, W_i)`` masks into ``(sum n_i, H, W)``, zero-padded bottom/right.

    detrex pads the batch to a common size with ``nested_tensor_from_tensor_list``; targets from
    ``prepare_targets`` are already padded, so this is usually a plain concatenation.
    """
    height = max(m.shape[-2] for m in masks)
    width = max(m.shape[-1] for m in masks)
    padded = []
    for m in masks:
        if m.shape[-2:] != (height, width):
            m = F.pad(m, (0, width - m.shape[-1], 0, height - m.shape[-2]))
        padded.append(m)
    return torch.cat(padded, dim=0)


def _is_thing(target: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``(n,)`` bool thing flags of a target dict (all things when the key is missing: instance data)."""
    if "is_thing" in target:
        return target["is_thing"].to(torch.bool)
    return torch.ones(len(target["labels"]), dtype=torch.bool, device=target["labels"].device)


class SetCriterion(nn.Module):
    """MaskDINO's criterion (image level).

    Args:
        num_classes: number of object classes (no-object excluded).
        matcher: a :class:`~local2global.modeling.criteria.matcher.HungarianMatcher`.
        weight_dict: loss name -> weight; ``None``/empty builds MaskDINO's (``build_weight_dict``
            with the ``*_weight``, ``dn`` and ``dec_layers`` arguments), like ``WeightedCriterion``.
        eos_coef: no-object weight of the softmax-CE variant (stored in ``empty_weight``).
        losses: loss groups among ``"labels"``, ``"masks"``, ``"boxes"``.
        num_points: points per mask for the mask losses; ``None`` = dense mode.
        oversample_ratio / importance_sample_ratio: PointRend importance sampling.
        dn: ``"no"``, ``"standard"`` or ``"seg"`` denoising.
        dn_losses: loss groups for denoising queries (default from ``dn``).
        focal_alpha / focal_gamma: focal loss parameters.
        semantic_ce_loss: use the softmax cross-entropy class loss (``empty_weight``) instead of focal.
        class_weight, mask_weight, dice_weight, box_weight, giou_weight, dec_layers: for the default
            weight dict.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Optional[Dict[str, float]] = None,
        eos_coef: float = 0.1,
        losses: Sequence[str] = ("labels", "masks", "boxes"),
        num_points: Optional[int] = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        dn: str = "no",
        dn_losses: Optional[Sequence[str]] = None,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        semantic_ce_loss: bool = False,
        class_weight: float = 4.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        box_weight: float = 5.0,
        giou_weight: float = 2.0,
        dec_layers: int = 9,
    ):
        super().__init__()
        if dn not in DN_LOSSES:
            raise ValueError(f"dn must be one of {sorted(DN_LOSSES)}, got {dn!r}")
        for loss in losses:
            if loss not in BASE_LOSS_KEYS:
                raise ValueError(f"unknown loss {loss!r}")
        self.num_classes = num_classes
        self.matcher = matcher
        if not weight_dict:
            weight_dict = build_weight_dict(
                class_weight, mask_weight, dice_weight, box_weight, giou_weight, dn, dec_layers
            )
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.dn = dn
        self.dn_losses = tuple(DN_LOSSES[dn] if dn_losses is None else dn_losses)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        # Persistent: MaskDINO checkpoints hold ``criterion.empty_weight``.
        self.register_buffer("empty_weight", empty_weight)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.semantic_ce_loss = semantic_ce_loss

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _src_permutation_idx(indices: Indices) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        return batch_idx, src_idx

    @staticmethod
    def _tgt_permutation_idx(indices: Indices) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_idx = torch.cat([torch.full_like(tgt, i) for i, (_, tgt) in enumerate(indices)])
        tgt_idx = torch.cat([tgt for _, tgt in indices])
        return batch_idx, tgt_idx

    def _target_classes(self, src_logits: torch.Tensor, targets, indices: Indices) -> torch.Tensor:
        """``(B, Q)`` int64 class per query, ``num_classes`` (= no object) where unmatched."""
        device = src_logits.device
        batch_idx, src_idx = self._src_permutation_idx(indices)
        matched = torch.cat([t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)])
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
        target_classes[batch_idx.to(device), src_idx.to(device)] = matched.to(device)
        return target_classes

    # ------------------------------------------------------------------ losses
    def loss_labels(self, outputs, targets, indices: Indices, num_boxes: float, **kwargs) -> Dict[str, torch.Tensor]:
        """Sigmoid focal class loss ``loss_ce`` (see module docstring).

        Args:
            outputs: dict with ``pred_logits (B, Q, C)``.
            targets: B dicts with ``labels``.
            indices: per image ``(query idx, target idx)``.
            num_boxes: normaliser.
        """
        src_logits = outputs["pred_logits"]
        target_classes = self._target_classes(src_logits, targets, indices)
        # One-hot over C+1 columns, last (no-object) column dropped: unmatched rows are all zero.
        onehot = F.one_hot(target_classes, self.num_classes + 1)[..., :-1].to(src_logits.dtype)
        loss_ce = (
            sigmoid_focal_loss(src_logits, onehot, num_boxes, alpha=self.focal_alpha, gamma=self.focal_gamma)
            * src_logits.shape[1]
        )
        return {"loss_ce": loss_ce}

    def loss_labels_ce(self, outputs, targets, indices: Indices, num_masks: float, **kwargs) -> Dict[str, torch.Tensor]:
        """Softmax cross-entropy class loss with ``empty_weight`` (``semantic_ce_loss=True``).

        Needs ``pred_logits (B, Q, C+1)``; like detrex, it is a weighted mean (not ``/ num_masks``).
        """
        src_logits = outputs["pred_logits"].float()
        target_classes = self._target_classes(src_logits, targets, indices)
        loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight.to(src_logits))
        return {"loss_ce": loss_ce}

    def loss_boxes(self, outputs, targets, indices: Indices, num_boxes: float, **kwargs) -> Dict[str, torch.Tensor]:
        """Box L1 (``loss_bbox``) and ``1 - GIoU`` (``loss_giou``) of matched pairs, ``/ num_boxes``.

        Panoptic targets (dicts with ``is_thing (n,)`` bool) contribute only their thing pairs, as MaskDINO's
        ``loss_boxes_panoptic``: the normaliser stays ``num_boxes`` (all instances, stuff included). The stuff
        pairs are zeroed with ``torch.where`` rather than removed (no host synchronisation); without ``is_thing``
        the computation is the instance one, unchanged.
        """
        batch_idx, src_idx = self._src_permutation_idx(indices)
        device = outputs["pred_boxes"].device
        src_boxes = outputs["pred_boxes"][batch_idx.to(device), src_idx.to(device)]
        target_boxes = torch.cat(
            [t["boxes"][tgt.to(t["boxes"].device)] for t, (_, tgt) in zip(targets, indices)], dim=0
        ).to(src_boxes)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none")
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes))
        loss_giou = 1 - torch.diag(giou)
        if any("is_thing" in t for t in targets):
            thing = torch.cat([_is_thing(t)[tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)])
            thing = thing.to(device)
            loss_bbox = torch.where(thing[:, None], loss_bbox, torch.zeros_like(loss_bbox))
            loss_giou = torch.where(thing, loss_giou, torch.zeros_like(loss_giou))
        return {"loss_bbox": loss_bbox.sum() / num_boxes, "loss_giou": loss_giou.sum() / num_boxes}

    def loss_masks(
        self,
        outputs,
        targets,
        indices: Indices,
        num_masks: float,
        generator: Optional[torch.Generator] = None,
        **kwargs,
    ) -> Dict[str, torch.Tensor]:
        """Mask BCE (``loss_mask``) and dice (``loss_dice``) of matched pairs, ``/ num_masks``.

        Point mode: per-pair importance-sampled points (uncertainty ``-|logit|`` of the prediction);
        dense mode (``num_points=None``): the whole prediction grid vs. bilinearly resized targets.
        Target values are constants (no gradient), as in detrex.

        Args:
            outputs: dict with ``pred_masks (B, Q, h, w)``.
            targets: B dicts with ``masks (n, H, W)``.
            generator: random source of the sampling points.
        """
        src_masks = outputs["pred_masks"]
        device = src_masks.device
        if sum(len(src) for src, _ in indices) == 0:
            # No pair (e.g. a video frame without supervised tracks): zero losses that stay in the graph.
            zero = src_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        batch_idx, src_idx = self._src_permutation_idx(indices)
        src_masks = src_masks[batch_idx.to(device), src_idx.to(device)]
        all_masks = concat_masks_padded([t["masks"] for t in targets]).to(src_masks)
        offsets = torch.cumsum(torch.tensor([0] + [len(t["masks"]) for t in targets[:-1]]), 0)
        flat_tgt = torch.cat([tgt + offsets[i] for i, (_, tgt) in enumerate(indices)]).to(device)
        target_masks = all_masks[flat_tgt]

        if self.num_points is None:
            with torch.no_grad():
                point_labels = resize_masks_to_grid(target_masks, src_masks.shape[-2:])
            point_logits = src_masks.flatten(1)
        else:
            with torch.no_grad():
                coords = get_uncertain_point_coords_with_randomness(
                    src_masks[:, None],
                    calculate_uncertainty,
                    self.num_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                    generator=generator,
                )
                point_labels = point_sample(target_masks[:, None], coords, align_corners=False).squeeze(1)
            point_logits = point_sample(src_masks[:, None], coords, align_corners=False).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def get_loss(
        self, loss: str, outputs, targets, indices: Indices, num_masks: float, generator=None
    ) -> Dict[str, torch.Tensor]:
        """Dispatch one loss group (``"labels"``, ``"masks"``, ``"boxes"``)."""
        loss_map: Dict[str, Callable] = {
            "labels": self.loss_labels_ce if self.semantic_ce_loss else self.loss_labels,
            "masks": self.loss_masks,
            "boxes": self.loss_boxes,
        }
        if loss not in loss_map:
            raise KeyError(f"unknown loss {loss!r}")
        return loss_map[loss](outputs, targets, indices, num_masks, generator=generator)

    def stage_losses(
        self,
        outputs,
        targets,
        indices: Indices,
        num_masks: float,
        suffix: str = "",
        generator: Optional[torch.Generator] = None,
        losses: Optional[Sequence[str]] = None,
    ) -> Dict[str, torch.Tensor]:
        """All loss groups of one stage with a key suffix (e.g. ``"_3"``, ``"_interm"``)."""
        out = {}
        for loss in self.losses if losses is None else losses:
            terms = self.get_loss(loss, outputs, targets, indices, num_masks, generator)
            out.update({k + suffix: v for k, v in terms.items()})
        return out

    # ------------------------------------------------------------------ denoising
    @staticmethod
    def _dn_indices(targets, mask_dict, device) -> Tuple[Indices, int]:
        """Known query -> target pairs of the denoising groups (group g of image b: queries
        ``g * single_pad + j`` reconstruct target ``j``)."""
        scalar, pad_size = int(mask_dict["scalar"]), int(mask_dict["pad_size"])
        if pad_size % scalar != 0:
            raise ValueError("pad_size must be a multiple of the number of dn groups")
        single_pad = pad_size // scalar
        indices = []
        for t in targets:
            n = len(t["labels"])
            if n > 0:
                tgt = torch.arange(n, dtype=torch.int64, device=device).unsqueeze(0).repeat(scalar, 1)
                src = (torch.arange(scalar, dtype=torch.int64, device=device) * single_pad).unsqueeze(1) + tgt
                indices.append((src.flatten(), tgt.flatten()))
            else:
                empty = torch.zeros(0, dtype=torch.int64, device=device)
                indices.append((empty, empty.clone()))
        return indices, scalar

    def _dn_zero_losses(self, suffix: str, like: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Zero denoising terms for a batch without DN queries: the keys of ``dn_losses``, in detrex's order
        (boxes, labels, masks), so that every iteration logs the same keys."""
        groups = [g for g in ("boxes", "labels", "masks") if g in self.dn_losses]
        return {k + suffix: like.new_zeros(()) for g in groups for k in BASE_LOSS_KEYS[g]}

    # ------------------------------------------------------------------ forward
    def num_instances(self, targets, device) -> float:
        """Normaliser: number of gt instances of the batch, averaged over processes, >= 1."""
        return reduce_num_instances(sum(len(t["labels"]) for t in targets), device)

    def forward(self, outputs, targets, mask_dict=None, generator: Optional[torch.Generator] = None):
        """Compute every (unweighted) loss term.

        Args:
            outputs: MaskDINO outputs: ``pred_logits (B, Q, C)``, ``pred_masks (B, Q, h, w)``,
                ``pred_boxes (B, Q, 4)``, optional ``aux_outputs`` (list of dicts) and
                ``interm_outputs`` (dict).
            targets: B dicts with ``labels (n,)``, ``masks (n, H, W)``, ``boxes (n, 4)`` normalised cxcywh.
            mask_dict: denoising bookkeeping (``output_known_lbs_bboxes``, ``known_indice``,
                ``scalar``, ``pad_size``) when denoising queries were used.
            generator: random source for all point sampling.

        Returns:
            dict name -> 0-d tensor, in detrex's order (final, [dn], per aux layer [+dn], interm).
        """
        device = outputs["pred_logits"].device
        outputs_without_aux = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        use_dn = self.dn != "no" and mask_dict is not None
        if use_dn:
            dn_indices, scalar = self._dn_indices(targets, mask_dict, device)
            dn_outputs = mask_dict["output_known_lbs_bboxes"]

        indices = self.matcher(outputs_without_aux, targets, generator=generator)
        num_masks = self.num_instances(targets, device)

        losses = self.stage_losses(outputs, targets, indices, num_masks, generator=generator)
        if use_dn:
            losses.update(
                self.stage_losses(dn_outputs, targets, dn_indices, num_masks * scalar, "_dn", generator, self.dn_losses)
            )
        elif self.dn != "no":
            losses.update(self._dn_zero_losses("_dn", outputs["pred_logits"]))

        for i, aux in enumerate(outputs.get("aux_outputs", []) or []):
            aux_indices = self.matcher(aux, targets, generator=generator)
            losses.update(self.stage_losses(aux, targets, aux_indices, num_masks, f"_{i}", generator))
            # detrex: without interm outputs the first aux stage has no dn counterpart.
            start = 0 if "interm_outputs" in outputs else 1
            if i >= start:
                if use_dn:
                    losses.update(
                        self.stage_losses(
                            dn_outputs["aux_outputs"][i], targets, dn_indices, num_masks * scalar,
                            f"_dn_{i}", generator, self.dn_losses,
                        )
                    )
                elif self.dn != "no":
                    losses.update(self._dn_zero_losses(f"_dn_{i}", outputs["pred_logits"]))

        if "interm_outputs" in outputs:
            interm = outputs["interm_outputs"]
            interm_indices = self.matcher(interm, targets, generator=generator)
            losses.update(self.stage_losses(interm, targets, interm_indices, num_masks, "_interm", generator))
        return losses

    def weighted(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Multiply by ``weight_dict`` and drop unweighted keys (what MaskDINO's meta-arch returns)."""
        return {k: v * self.weight_dict[k] for k, v in losses.items() if k in self.weight_dict}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, losses={self.losses}, eos_coef={self.eos_coef}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}, dn={self.dn!r}"
        )

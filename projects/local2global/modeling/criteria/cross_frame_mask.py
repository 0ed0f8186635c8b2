"""IFR's cross-frame mask loss (Li et al., 2022, Eq. 6-7) as a clip-level term of the video criterion.

IFR supervises each frame-level query of frame t1 on its instance's masks of the *other* frames t2 of the clip
too::

    L_m-bar = sum_t1 [ L_m(m^t1, m-hat^t1) + lambda_e * sum_{t2 != t1} L_m(m^t2, m-hat^{t1 -> t2}) ]   (same for dice)

with lambda_e = 0.3. Online, the frame-level query of slot i at frame t1 is the slot's decoder output; its mask on
frame t2 is ``einsum(mask_embed_i^t1, mask_features^t2)``, so the term needs every frame's ``mask_embeds (B, N, Dm)``
and ``mask_features (B, Dm, h, w)`` (``needs_mask_embeds = True``: the meta-architecture and the trackers add them
when the criterion has such a term). The first part of the sum is the criterion's own mask loss; this term adds
the second.

Readings:

* **pairs**: on a supervised source frame t1, the (slot, track) pairs the main loss supervises there (tracks
  matched at or before t1; a slot is no-object before its track's first frame, so it predicts no other-frame mask
  either); target frames t2 != t1 (earlier and later ones, as IFR's clip-level training) where the track is valid
  (the pairs of the other frames whose track is absent would have empty targets; IFR's annotations have none);
* **points**: PointRend importance sampling on the cross-frame logits (``num_points``, ``oversample_ratio``,
  ``importance_sample_ratio``, the configs interpolate the set criterion's) or, with ``num_points=None``, the
  dense mode of :class:`~local2global.modeling.criteria.set_criterion.SetCriterion` (every pixel of the grid against the
  bilinearly resized targets);
* **normalisation** as the main mask loss: per pair, mean-over-points BCE and ``1 - dice``, summed over the
  (t1, t2, pair) terms and divided by the criterion's ``num_masks``; weights ``lambda_e * mask_weight`` and
  ``lambda_e * dice_weight`` (0.3 x 5 with MaskDINO's weights). IFR trains on 2-frame clips, where the sum over t2
  has one term; ``average_other_frames=True`` divides each source's sum by its number of target frames so that
  longer clips do not weigh it more;
* **stages**: the final decoder layer only (the embedding the trackers expose).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from local2global.layers.point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    resize_masks_to_grid,
)

from .set_criterion import dice_loss, sigmoid_ce_loss

__all__ = ["CrossFrameMaskLoss", "mask_bce_dice", "IFR_LAMBDA_E"]

#: IFR's weight of the cross-frame terms relative to the same-frame mask terms (its Fig. 4: best of the sweep).
IFR_LAMBDA_E = 0.3


def mask_bce_dice(logits: Tensor, target_masks: Tensor, num_masks: float, num_points: Optional[int] = None,
                  oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75,
                  generator: Optional[torch.Generator] = None, row_weights: Optional[Tensor] = None
                  ) -> Tuple[Tensor, Tensor]:
    """SetCriterion's mask BCE and dice on ``R`` (prediction, target) rows.

    Args:
        logits: ``(R, h, w)`` mask logits.
        target_masks: ``(R, H, W)`` float targets (full resolution, or already on the ``h × w`` grid).
        num_masks: normaliser.
        num_points: ``None`` = dense (every pixel of the grid); else importance-sampled points per row.
        oversample_ratio / importance_sample_ratio: PointRend sampling.
        generator: random source of the points.
        row_weights: optional ``(R,)`` weight per row (``average_other_frames``).

    Returns:
        ``(loss_mask, loss_dice)`` 0-d tensors: per row mean-over-points BCE and ``1 - dice``, summed, ``/ num_masks``.
    """
    if num_points is None:
        with torch.no_grad():
            labels = resize_masks_to_grid(target_masks, logits.shape[-2:])
        point_logits = logits.flatten(1)
    else:
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                logits[:, None], calculate_uncertainty, num_points, oversample_ratio, importance_sample_ratio,
                generator=generator)
            labels = point_sample(target_masks[:, None], coords, align_corners=False).squeeze(1)
        point_logits = point_sample(logits[:, None], coords, align_corners=False).squeeze(1)
    if row_weights is None:
        return sigmoid_ce_loss(point_logits, labels, num_masks), dice_loss(point_logits, labels, num_masks)
    # Same formulas with a weight per row: scale each row's term before the sum.
    bce = nn.functional.binary_cross_entropy_with_logits(point_logits, labels, reduction="none").mean(1)
    probs = point_logits.sigmoid()
    dice = 1 - (2 * (probs * labels).sum(-1) + 1) / (probs.sum(-1) + labels.sum(-1) + 1)
    return (bce * row_weights).sum() / num_masks, (dice * row_weights).sum() / num_masks


class CrossFrameMaskLoss(nn.Module):
    """Clip-level cross-frame mask term (``VideoSetCriterion(extra_terms=[CrossFrameMaskLoss()])``).

    Args:
        lambda_e: IFR's cross-frame weight (0.3).
        mask_weight / dice_weight: the main mask loss's weights (multiplied by ``lambda_e``).
        num_points / oversample_ratio / importance_sample_ratio: the set criterion's point sampling
            (``num_points=None``: dense mode).
        average_other_frames: divide each source frame's sum over target frames by their number.

    Returns (forward): ``{"loss_mask_xframe", "loss_dice_xframe"}``, weighted.
    """

    needs_mask_embeds = True

    def __init__(self, lambda_e: float = IFR_LAMBDA_E, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 num_points: Optional[int] = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, average_other_frames: bool = False):
        super().__init__()
        self.lambda_e = lambda_e
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.average_other_frames = average_other_frames

    def forward(self, outputs_per_frame: List[Dict], targets: List[List[Dict[str, Tensor]]], assignment: Dict,
                generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Weighted cross-frame BCE and dice.

        Args:
            outputs_per_frame: T frame outputs with ``mask_embeds (B, N, Dm)`` and ``mask_features (B, Dm, h, w)``.
            targets: B x T target dicts (``masks (n, H, W)`` or on the grid, ``valid (n,)``).
            assignment: the criterion's ``last_assignment``.
            generator: random source of the points (point mode; the criterion calls terms without one: the
                global RNG).
        """
        for t, out in enumerate(outputs_per_frame):
            if "mask_embeds" not in out or "mask_features" not in out:
                raise KeyError(f"frame {t}: CrossFrameMaskLoss needs 'mask_embeds' and 'mask_features' in the frame "
                               "outputs (the tracker adds them when the criterion's needs_mask_embeds is True)")
        logits, masks, weights = [], [], []
        for b, clip in enumerate(targets):
            rows = self._clip_rows(b, clip, assignment)
            if rows is None:
                continue
            lg, mk, wt = self._clip_logits(b, clip, outputs_per_frame, *rows)
            logits.append(lg)
            masks.append(mk)
            weights.append(wt)
        if not logits:
            zero = sum(o["mask_embeds"].sum() * 0.0 for o in outputs_per_frame)
            return {"loss_mask_xframe": zero, "loss_dice_xframe": zero.clone()}
        logits = torch.cat(logits)
        # every clip's targets are padded to the batch's input size (or resized to the one grid) by the criterion
        masks = torch.cat([m.to(logits.dtype) for m in masks])
        row_weights = torch.cat(weights) if self.average_other_frames else None
        loss_mask, loss_dice = mask_bce_dice(logits, masks, assignment["num_masks"],
                                             self.num_points, self.oversample_ratio, self.importance_sample_ratio,
                                             generator, row_weights)
        return {"loss_mask_xframe": self.lambda_e * self.mask_weight * loss_mask,
                "loss_dice_xframe": self.lambda_e * self.dice_weight * loss_dice}

    @staticmethod
    def _clip_rows(b: int, clip: List[Dict[str, Tensor]], assignment: Dict):
        """Host-side rows ``(t1, t2, track, slot, weight)`` of one clip (int64 / float CPU), or ``None`` if none."""
        slot, first = assignment["slots"][b], assignment["first_frame"][b]
        supervised = assignment["supervised"][b]
        num_frames = len(clip)
        # (T, n) validity: one small device-to-host copy per clip (the criterion's matching makes the same ones)
        valid = torch.stack([t["valid"].to(torch.bool).cpu() if "valid" in t else
                             torch.ones(len(t["labels"]), dtype=torch.bool) for t in clip])
        src_t, dst_t, track, weight = [], [], [], []
        for t1 in range(num_frames):
            if not bool(supervised[t1]):
                continue
            seen = torch.nonzero((slot >= 0) & (first >= 0) & (first <= t1)).flatten()
            if len(seen) == 0:
                continue
            others = [t2 for t2 in range(num_frames) if t2 != t1]
            counts = valid[others][:, seen].sum(0).clamp(min=1)  # target frames per seen track
            for t2 in others:
                ok = valid[t2, seen]
                keep = seen[ok]
                src_t += [t1] * len(keep)
                dst_t += [t2] * len(keep)
                track += keep.tolist()
                weight += (1.0 / counts[ok].double()).tolist()
        if not track:
            return None
        track = torch.tensor(track, dtype=torch.int64)
        return (torch.tensor(src_t, dtype=torch.int64), torch.tensor(dst_t, dtype=torch.int64), track, slot[track],
                torch.tensor(weight))

    @staticmethod
    def _clip_logits(b: int, clip, outputs_per_frame: List[Dict], src_t: Tensor, dst_t: Tensor, track: Tensor,
                     slot: Tensor, weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(R, h, w)`` cross-frame logits, ``(R, H, W)`` targets and ``(R,)`` row weights of one clip.

        Rows are grouped by target frame so that each frame's mask features enter one einsum (never a copy of
        the mask features per row).
        """
        embeds = torch.stack([o["mask_embeds"][b] for o in outputs_per_frame])  # (T, N, Dm)
        device = embeds.device
        logits, masks, weights = [], [], []
        for t2 in torch.unique(dst_t).tolist():
            sel = torch.nonzero(dst_t == t2).flatten()
            rows = embeds[src_t[sel].to(device), slot[sel].to(device)]  # (r, Dm)
            logits.append(torch.einsum("rc,chw->rhw", rows, outputs_per_frame[t2]["mask_features"][b]))
            tgt_masks = clip[t2]["masks"]
            masks.append(tgt_masks[track[sel].to(tgt_masks.device)].to(device))
            weights.append(weight[sel])
        return torch.cat(logits), torch.cat(masks), torch.cat(weights).to(device=device, dtype=embeds.dtype)

    def extra_repr(self) -> str:
        return (f"lambda_e={self.lambda_e}, mask_weight={self.mask_weight}, dice_weight={self.dice_weight}, "
                f"num_points={self.num_points}, average_other_frames={self.average_other_frames}")

"""IFR's matching-based test-time augmentation in an online form: several input scales in lockstep.

IFR (Li et al., 2022) runs a video at several resolutions, picks one result as the pivot, matches every other
result's instances to the pivot's with the training matching cost (class + mask) and averages the matched
instances' class and mask probabilities. IFR is offline (it matches whole-video results); online, each scale
keeps its own model state (:meth:`Local2Global.step` per scale, one tracker state each) and every frame is run at
every scale before the next frame:

* **one state per scale** (lockstep): memory is S times the model's state plus the ``(S, N)`` slot map: flat
  over the video;
* **matched once per slot**: pivot slot i is matched to a slot of each other scale on the *first frame where its
  top class probability reaches* ``match_threshold`` (by default the post-processor's ``frame_score_threshold``:
  the first frame on which the slot would be shown as a streaming instance). A slot's identity is stable in every
  tracker (propagation keeps it; association trackers re-order into stable slots), so the pair holds for the rest
  of the video; before that frame the pivot slot is not averaged (its own prediction goes through), and a slot of
  another scale is matched at most once (the pairs form a partial bijection). Matching on frame 0 for all slots
  would pair the many empty slots of a propagation tracker by noise; matching per frame would let pairs switch;
* **cost**: IFR's Eq. 4 with the pivot's prediction as the target: ``-cost_class * p_s(c_i)`` (c_i = the pivot
  slot's top class) ``+ cost_mask * BCE(p_pivot, p_s) + cost_dice * (1 - dice)`` on the mask probabilities on the
  pivot's mask grid (the valid, unpadded cells), weights 2 / 5 / 5 as IFR's (Mask2Former's) matcher; Hungarian
  (scipy) on the host;
* **common grid**: every scale's mask probabilities are resampled (bilinear, one ``grid_sample``) onto the pivot's
  mask-feature grid with the exact geometry of the two inputs (the image area maps to the image area, padding
  aside); then class and mask probabilities are averaged per frame over the pivot and the matched slots, turned
  back into logits and handed to the model's post-processor as the pivot's prediction;
* **scales** are shortest-edge lengths (``max_size`` caps the long edge, as ``ResizeShortestEdge``); each frame is
  resized from the frame the test mapper produced (detectron2's PIL bilinear resize), and a scale that gives the
  frame's own size runs the frame untouched. With one scale this is exactly :meth:`Local2Global.inference_video`.

Host syncs: one small copy per frame (which pivot slots newly reach the threshold) when there are several scales,
and one Hungarian problem per other scale on the frames where some do.

Use: ``MultiScaleTTA(model, scales=(288, 360, 432))`` and call it as the model in eval mode (a list of test
videos -> results), e.g. ``do_test(cfg, tta)``; ``scripts/eval_tta.py --tta-scales 288,360,432`` does that from a
config and checkpoint.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from local2global.layers.box_ops import mask2box
from local2global.modeling.postprocessing.video_instances import FrameInstances

__all__ = ["MultiScaleTTA", "TTAState", "resize_frame", "resample_to_grid", "tta_match_cost", "parse_scales"]

logger = logging.getLogger(__name__)

#: IFR's matching weights (Mask2Former's matcher): class, mask BCE, dice.
TTA_COST_CLASS = 2.0
TTA_COST_MASK = 5.0
TTA_COST_DICE = 5.0
# Probabilities are clamped to [eps, 1 - eps] before logs / logits (finite costs and logits).
_PROB_EPS = 1e-6


def parse_scales(text: str) -> Tuple[int, ...]:
    """``"288,360,432"`` -> ``(288, 360, 432)`` (the ``--tta-scales`` flag)."""
    scales = tuple(int(s) for s in str(text).replace(" ", "").split(",") if s)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"TTA scales must be positive shortest-edge lengths, got {text!r}")
    return scales


def resize_frame(frame: Tensor, short_edge: int, max_size: Optional[int] = None) -> Tensor:
    """Resize a ``3×H×W`` uint8 frame so that its short edge is ``short_edge`` (long edge at most ``max_size``).

    The frame is returned as is when the size does not change; otherwise detectron2's ``ResizeTransform`` (PIL
    bilinear, what the test mapper's ``ResizeShortestEdge`` uses) on the host.
    """
    h, w = int(frame.shape[-2]), int(frame.shape[-1])
    new_h, new_w = T.ResizeShortestEdge.get_output_shape(h, w, short_edge, max_size or sys.maxsize)
    if (new_h, new_w) == (h, w):
        return frame
    array = frame.permute(1, 2, 0).cpu().numpy()
    resized = T.ResizeTransform(h, w, new_h, new_w).apply_image(array)
    return torch.from_numpy(np.array(resized, copy=True)).permute(2, 0, 1).to(frame.device)


def resample_to_grid(probs: Tensor, padded: Sequence[int], image: Sequence[int], target_grid: Sequence[int],
                     target_padded: Sequence[int], target_image: Sequence[int]) -> Tensor:
    """Resample mask probabilities of one input geometry onto the mask grid of another.

    A cell centre of the target grid lies at ``(i + 0.5) * Hp_t / h_t`` target-input pixels, i.e. at the fraction
    ``u = that / Hi_t`` of the image; the same fraction of the source image is ``u * Hi_s`` source-input pixels,
    which ``grid_sample`` (``align_corners=False``: the source grid spans the padded input ``Hp_s``) reads at
    ``2 u Hi_s / Hp_s - 1``. Likewise for x.

    Args:
        probs: ``(N, h_s, w_s)`` probabilities on the source mask grid (spanning ``padded``).
        padded / image: ``(Hp_s, Wp_s)`` and ``(Hi_s, Wi_s)`` padded and unpadded source input sizes.
        target_grid: ``(h_t, w_t)``; target_padded / target_image: the target input's sizes.

    Returns:
        ``(N, h_t, w_t)``; 0 outside the source grid.
    """
    h_t, w_t = int(target_grid[0]), int(target_grid[1])
    dev, dt = probs.device, probs.dtype

    def axis(n_t: int, pad_t: int, img_t: int, pad_s: int, img_s: int) -> Tensor:
        centres = (torch.arange(n_t, device=dev, dtype=dt) + 0.5) * (pad_t / n_t)
        return 2.0 * (centres / img_t) * (img_s / pad_s) - 1.0

    ys = axis(h_t, target_padded[0], target_image[0], padded[0], image[0])
    xs = axis(w_t, target_padded[1], target_image[1], padded[1], image[1])
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h_t, w_t, 2) as (x, y)
    return F.grid_sample(probs[:, None], grid[None].expand(probs.shape[0], -1, -1, -1), mode="bilinear",
                         padding_mode="zeros", align_corners=False)[:, 0]


def tta_match_cost(pivot_cls: Tensor, pivot_masks: Tensor, other_cls: Tensor, other_masks: Tensor,
                   cost_class: float = TTA_COST_CLASS, cost_mask: float = TTA_COST_MASK,
                   cost_dice: float = TTA_COST_DICE) -> Tensor:
    """IFR's Eq. 4 between pivot slots (targets) and another scale's slots, on probabilities.

    Args:
        pivot_cls: ``(m, C)`` class probabilities of the pivot slots to match.
        pivot_masks: ``(m, P)`` their mask probabilities (P cells of the common grid).
        other_cls / other_masks: ``(k, C)`` / ``(k, P)`` of the candidate slots of the other scale.

    Returns:
        ``(m, k)`` cost.
    """
    labels = pivot_cls.argmax(-1)
    c_cls = -other_cls[:, labels].T  # (m, k)
    q = other_masks.clamp(_PROB_EPS, 1 - _PROB_EPS)
    p = pivot_masks
    num_cells = max(p.shape[-1], 1)
    c_bce = -(p @ q.log().T + (1 - p) @ (1 - q).log().T) / num_cells
    dice = (2 * p @ other_masks.T + 1) / (p.sum(-1)[:, None] + other_masks.sum(-1)[None, :] + 1)
    return cost_class * c_cls + cost_mask * c_bce + cost_dice * (1 - dice)


@dataclass
class TTAState:
    """The lockstep state: O(S · model state + S · N), flat over the video.

    Attributes:
        states: per scale, the model's (tracker's) state.
        assign: ``(S, N)`` int64: ``assign[s, i]`` = the slot of scale s averaged into pivot slot i, -1 while
            unmatched (the pivot's row is ``0..N-1``); ``None`` before the first frame.
        matched: ``(N,)`` bool, pivot slots already matched.
    """

    states: List[Any]
    assign: Optional[Tensor] = None
    matched: Optional[Tensor] = None


class MultiScaleTTA(nn.Module):
    """Online multi-scale TTA around a :class:`~local2global.modeling.meta_arch.Local2Global` (eval only).

    Args:
        model: the meta-architecture (its ``preprocess``, ``encode``, ``step`` and ``postprocessor`` are used).
        scales: shortest-edge lengths, run in this order.
        pivot: index in ``scales`` of the pivot scale (its grid and input geometry are the output's);
            ``None`` = the middle entry (``len(scales) // 2``).
        max_size: cap of the long edge (``None``: none).
        match_threshold: top class probability at which a pivot slot is matched; ``None`` = the post-processor's
            ``frame_score_threshold``.
        cost_class / cost_mask / cost_dice: matching weights.
    """

    def __init__(self, model: nn.Module, scales: Sequence[int], pivot: Optional[int] = None,
                 max_size: Optional[int] = None, match_threshold: Optional[float] = None,
                 cost_class: float = TTA_COST_CLASS, cost_mask: float = TTA_COST_MASK,
                 cost_dice: float = TTA_COST_DICE):
        super().__init__()
        scales = tuple(int(s) for s in scales)
        if not scales:
            raise ValueError("MultiScaleTTA needs at least one scale")
        pivot = len(scales) // 2 if pivot is None else int(pivot)
        if not 0 <= pivot < len(scales):
            raise ValueError(f"pivot index {pivot} out of range for {len(scales)} scales")
        self.model = model
        self.scales = scales
        self.pivot = pivot
        self.max_size = max_size
        if match_threshold is None:
            match_threshold = getattr(model.postprocessor, "frame_score_threshold", 0.5)
        self.match_threshold = float(match_threshold)
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice

    @property
    def postprocessor(self):
        return self.model.postprocessor

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        if self.training:
            raise RuntimeError("MultiScaleTTA is an inference wrapper: call .eval() (train the wrapped model)")
        return [self.inference_video(video) for video in batched_inputs]

    # ------------------------------------------------------------------ video level
    @torch.no_grad()
    def inference_video(self, video: Dict) -> Dict:
        """The online TTA result of one test video (same format as :meth:`Local2Global.inference_video`)."""
        output_size = (int(video["height"]), int(video["width"]))
        self.postprocessor.reset()
        state = None
        for i, frame in enumerate(video["frames"]):
            state, _ = self.process_frame(state, frame, output_size, frame_index=i)
        return self.postprocessor.finalize(video["video_id"], output_size)

    def iter_video(self, frames: Iterable[Tensor], output_size: Tuple[int, int]):
        """Yield :class:`FrameInstances` frame by frame (as :meth:`Local2Global.iter_video`)."""
        state = None
        for i, frame in enumerate(frames):
            with torch.no_grad():
                state, inst = self.process_frame(state, frame, output_size, return_instances=True, frame_index=i)
            yield inst

    # ------------------------------------------------------------------ frame level
    @torch.no_grad()
    def process_frame(self, state: Optional[TTAState], frame: Tensor, output_size: Tuple[int, int],
                      return_instances: bool = False, frame_index: int = 0, store: bool = True
                      ) -> Tuple[TTAState, Optional[FrameInstances]]:
        """One streaming step at every scale, merged into the pivot's slots and fed to the post-processor.

        Args: as :meth:`Local2Global.process_frame` (``state`` is a :class:`TTAState` or ``None``).
        """
        model = self.model
        if state is None:
            state = TTAState(states=[None] * len(self.scales))
        runs = []
        for s, scale in enumerate(self.scales):
            images = model.preprocess([resize_frame(frame, scale, self.max_size)])
            mask_features, multi_scale = model.encode(images.tensor)
            state.states[s], out = model.step(state.states[s], multi_scale, mask_features, frame_index=frame_index)
            runs.append((out, tuple(images.tensor.shape[-2:]), tuple(images.image_sizes[0])))
        out_p, padded_p, image_p = runs[self.pivot]
        if len(runs) == 1:
            logits, masks = out_p["pred_logits"][0], out_p["pred_masks"][0]
        else:
            logits, masks = self._merge(state, runs)
        kept = self.postprocessor.update(logits, masks, padded_p, image_p, output_size,
                                         keep_frame_masks=return_instances, store=store)
        instances = None
        if return_instances:
            probs, bin_masks = kept
            boxes = mask2box(masks[None], fallback_boxes=out_p["pred_boxes"][:1].clamp(0.0, 1.0))[0]
            instances = self.postprocessor.frame_instances(frame_index, probs, bin_masks, boxes)
        return state, instances

    def _merge(self, state: TTAState, runs) -> Tuple[Tensor, Tensor]:
        """Match newly confident pivot slots, then average class / mask probabilities over matched slots.

        Returns:
            ``(logits (N, C), mask logits (N, h_p, w_p))`` of the merged prediction on the pivot's grid.
        """
        out_p, padded_p, image_p = runs[self.pivot]
        grid_p = tuple(out_p["pred_masks"].shape[-2:])
        cls = [r[0]["pred_logits"][0].float().sigmoid() for r in runs]  # (N, C) each
        masks = []
        for s, (out, padded, image) in enumerate(runs):
            probs = out["pred_masks"][0].float().sigmoid()
            masks.append(probs if s == self.pivot else
                         resample_to_grid(probs, padded, image, grid_p, padded_p, image_p))
        num_slots = cls[self.pivot].shape[0]
        device = cls[self.pivot].device
        if state.assign is None:
            state.assign = torch.full((len(runs), num_slots), -1, dtype=torch.int64, device=device)
            state.assign[self.pivot] = torch.arange(num_slots, device=device)
            state.matched = torch.zeros(num_slots, dtype=torch.bool, device=device)
        newly = (cls[self.pivot].max(-1).values >= self.match_threshold) & ~state.matched
        new_idx = torch.nonzero(newly).flatten().cpu()  # the one per-frame host copy
        if len(new_idx):
            self._match(state, new_idx, cls, masks, grid_p, padded_p, image_p)
        cls_sum, mask_sum = cls[self.pivot].clone(), masks[self.pivot].clone()
        count = torch.ones(num_slots, device=device)
        for s in range(len(runs)):
            if s == self.pivot:
                continue
            slot = state.assign[s]
            weight = (slot >= 0).to(cls_sum.dtype)
            idx = slot.clamp(min=0)
            cls_sum += weight[:, None] * cls[s][idx]
            mask_sum += weight[:, None, None] * masks[s][idx]
            count += weight
        cls_avg = cls_sum / count[:, None]
        mask_avg = mask_sum / count[:, None, None]
        return torch.logit(cls_avg, eps=_PROB_EPS), torch.logit(mask_avg, eps=_PROB_EPS)

    def _match(self, state: TTAState, new_idx: Tensor, cls: List[Tensor], masks: List[Tensor],
               grid_p: Tuple[int, int], padded_p: Tuple[int, int], image_p: Tuple[int, int]) -> None:
        """Hungarian matching of the pivot slots ``new_idx`` to the free slots of every other scale."""
        # cells of the pivot grid whose centre lies in the image (the padding is not compared)
        rows = min(grid_p[0], int(np.ceil(image_p[0] * grid_p[0] / padded_p[0] - 0.5)))
        cols = min(grid_p[1], int(np.ceil(image_p[1] * grid_p[1] / padded_p[1] - 0.5)))
        device = state.assign.device
        new_dev = new_idx.to(device)
        pivot_masks = masks[self.pivot][new_dev, :rows, :cols].flatten(1)
        assign_host = state.assign.cpu()
        for s in range(len(cls)):
            if s == self.pivot:
                continue
            taken = torch.zeros(cls[s].shape[0], dtype=torch.bool)
            taken[assign_host[s][assign_host[s] >= 0]] = True
            free = torch.nonzero(~taken).flatten()
            free_dev = free.to(device)
            cost = tta_match_cost(cls[self.pivot][new_dev], pivot_masks, cls[s][free_dev],
                                  masks[s][free_dev, :rows, :cols].flatten(1),
                                  self.cost_class, self.cost_mask, self.cost_dice)
            r, c = linear_sum_assignment(cost.double().cpu().numpy())
            pairs = torch.full((len(new_idx),), -1, dtype=torch.int64)
            pairs[torch.as_tensor(r, dtype=torch.int64)] = free[torch.as_tensor(c, dtype=torch.int64)]
            state.assign[s, new_dev] = pairs.to(device)
        state.matched[new_dev] = True
        logger.debug("TTA: matched %d pivot slots", len(new_idx))

    def extra_repr(self) -> str:
        return (f"scales={self.scales}, pivot={self.pivot}, max_size={self.max_size}, "
                f"match_threshold={self.match_threshold}")

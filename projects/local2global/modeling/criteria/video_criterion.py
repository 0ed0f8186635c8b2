"""Video set criterion of Local2Global: match once per track, reduced supervision.

Semantics (SPEC §3, rows *matching*, *targets*, *reduced supervision*, *loss normalisation*):

* **Matching once per track.** Frames are visited in order. At frame ``t`` every track that is
  valid at ``t`` and has no slot yet is matched with MaskDINO's costs (the
  :class:`~local2global.modeling.criteria.matcher.HungarianMatcher`) on the **final decoder layer's**
  predictions of that frame; slots already taken by earlier tracks get a prohibitive cost
  (``TAKEN_SLOT_COST``, a large finite number since scipy rejects infinities in a feasible
  problem). The assignment is then reused on every later frame and by every decoder layer and the
  initial prediction (``aux_outputs``). Matching also runs on frames whose losses are skipped.
* **Targets per frame.** Before a track's first appearance its slot is no-object (the pair is not
  in the frame's target set). While valid: class + mask + box. After it disappears (any frame
  where it is invalid after its first appearance): the slot keeps the class, its mask target is
  empty and it has no box loss; ``absent_as_no_object=True`` makes such slots no-object instead.
* **Panoptic targets** (frame dicts with ``is_thing (n,)`` bool, from
  :class:`~local2global.data.vps_mapper.VideoPanopticClipMapper`): stuff targets are tracks like things (matched
  once, propagated, class + mask losses), but have no box loss and no box matching cost (MaskDINO's panoptic
  mode: :func:`~local2global.modeling.criteria.matcher.neutralize_stuff_columns`, ``SetCriterion.loss_boxes``). Without the
  key (instance data) nothing changes, bit for bit.
* **Encoder (interm) loss** is image level: per frame, matched independently by the matcher on the
  ``interm_outputs`` against the frame's valid instances only (MaskDINO's interm loss).
* **Reduced supervision** (per clip, every call): the last frame is always supervised; ``k`` is
  drawn uniformly from ``1..T-2`` and ``k`` distinct frames among ``0..T-2`` are skipped (so at
  least two frames stay supervised; ``T <= 2`` skips nothing). Every loss of a skipped frame of
  that clip is dropped (the clip is removed from that frame's batch before the loss).
* **Normalisation / aggregation.** ``num_masks`` = number of valid ground-truth instances over the
  supervised (clip, frame) pairs of the batch, averaged over processes, clamped at 1 — MaskDINO's
  normaliser with "image" replaced by "supervised frame". Every per-frame term (computed with
  SetCriterion's helpers, each already divided by this global ``num_masks``) is **summed** over the
  supervised frames. Choice: one global normaliser makes a frame with many instances weigh more,
  exactly as an image with many instances does in MaskDINO's batch, and keeps the loss scale
  independent of how many frames were skipped. The focal class loss sums over all ``B*N*C`` terms
  of the supervised frames (MaskDINO's ``loss_ce`` convention).

The output is **weighted** (each term multiplied by ``set_criterion.weight_dict``; terms without
a weight are dropped), so that the detectron2 trainer's ``sum(loss_dict.values())`` is the loss.
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from local2global.layers.point_sampling import resize_masks_to_grid

from .matcher import HungarianMatcher
from .set_criterion import BASE_LOSS_KEYS, SetCriterion, reduce_num_instances

logger = logging.getLogger(__name__)

__all__ = ["VideoSetCriterion", "TAKEN_SLOT_COST", "sample_supervised_frames"]

#: Cost given to slots already owned by an earlier track (finite: scipy needs a feasible matrix).
TAKEN_SLOT_COST = 1e8
#: Upper bound (exclusive) of the seed drawn from a ``numpy.random.Generator`` for a torch generator.
_SEED_BOUND = 2**63 - 1

GeneratorLike = Union[None, int, torch.Generator, np.random.Generator]


def _randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    """Uniform integer in ``[low, high)`` from ``generator`` (global torch RNG if ``None``)."""
    return int(torch.randint(low, high, (1,), generator=generator).item())


def sample_supervised_frames(
    num_clips: int, num_frames: int, reduced: bool = True, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Draw which frames of each clip are supervised (reduced supervision).

    Per clip: ``k ~ U{1, ..., T-2}``, then ``k`` distinct frames uniformly among ``0..T-2`` are
    skipped; the last frame is always supervised. ``T <= 2`` or ``reduced=False``: all frames.

    Args:
        num_clips: B.
        num_frames: T.
        reduced: whether to skip frames at all.
        generator: torch CPU generator (global RNG when ``None``).

    Returns:
        ``(B, T)`` bool CPU tensor, True = supervised.
    """
    supervised = torch.ones((num_clips, num_frames), dtype=torch.bool)
    if not reduced or num_frames <= 2:
        return supervised
    for b in range(num_clips):
        num_skipped = _randint(1, num_frames - 1, generator)  # 1..T-2
        skipped = torch.randperm(num_frames - 1, generator=generator)[:num_skipped]
        supervised[b, skipped] = False
    return supervised


class VideoSetCriterion(nn.Module):
    """Clip-level loss: match-once per track + reduced supervision over MaskDINO's per-frame terms.

    Args:
        set_criterion: the image-level :class:`~local2global.modeling.criteria.set_criterion.SetCriterion`
            providing the loss terms (``loss_labels``/``loss_masks``/``loss_boxes``), the loss
            groups, the point-sampling settings and ``weight_dict``.
        matcher: matcher for the track assignment and the interm loss (default: the set
            criterion's).
        reduced_supervision: skip random frames' losses (Table 6 toggle).
        absent_as_no_object: after a track disappears, treat its slot as no-object instead of
            "label kept, empty mask".
        interm_loss: add the image-level encoder (top-K token) loss of frames with ``interm_outputs``.
        box_loss: add box L1/GIoU losses; when off, the matching uses no box cost either.
        deep_supervision: add the losses of every auxiliary decoder layer (and of the DN queries' auxiliary
            layers), MaskDINO's default. Off, only the final layer's predictions are supervised, as the paper's
            Eq. 4 writes the loss; the matching is the final layer's either way.
        seed: seed of the criterion's own generator, used when ``forward`` receives none
            (``None``: the global torch RNG).
        extra_terms: further clip-level loss terms (e.g. IFR's cross-frame mask loss, InsPro's box
            de-duplication), each a module called as ``term(outputs_per_frame, targets, assignment)`` with
            ``assignment`` = :attr:`last_assignment` of this call, returning already weighted losses.

    A frame output may carry ``match_outputs`` (a dict with ``pred_logits``, ``pred_masks``, ``pred_boxes``): the
    match-once assignment is then computed on those instead of the frame's own predictions (DVIS's guided
    matching on the frozen segmenter's predictions); the losses still use the frame's own predictions.

    Attributes:
        last_assignment: info about the last call: ``slots`` (per clip ``(n,)`` int64 slot of each
            track, -1 if never matched), ``first_frame`` (per clip ``(n,)`` int64, -1 if never
            valid), ``supervised`` (``(B, T)`` bool), ``num_masks`` (float).
    """

    def __init__(
        self,
        set_criterion: SetCriterion,
        matcher: Optional[HungarianMatcher] = None,
        reduced_supervision: bool = True,
        absent_as_no_object: bool = False,
        interm_loss: bool = True,
        box_loss: bool = True,
        deep_supervision: bool = True,
        seed: Optional[int] = None,
        extra_terms: Sequence[nn.Module] = (),
    ):
        super().__init__()
        self.extra_terms = nn.ModuleList(extra_terms)
        self.set_criterion = set_criterion
        self.matcher = matcher if matcher is not None else set_criterion.matcher
        self.reduced_supervision = reduced_supervision
        self.absent_as_no_object = absent_as_no_object
        self.interm_loss = interm_loss
        self.box_loss = box_loss
        self.deep_supervision = deep_supervision
        self.weight_dict = set_criterion.weight_dict
        # MaskDINO checkpoints hold ``criterion.empty_weight``: expose the set criterion's buffer at
        # this level (same tensor) and keep only this copy in the state dict.
        set_criterion._non_persistent_buffers_set.add("empty_weight")
        self.register_buffer("empty_weight", set_criterion.empty_weight)
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.last_assignment: Optional[Dict] = None
        self._warned_keys = set()

    # ------------------------------------------------------------------ configuration
    @property
    def needs_mask_embeds(self) -> bool:
        """Whether an extra term asks every frame output for ``mask_embeds`` and ``mask_features``."""
        return any(getattr(term, "needs_mask_embeds", False) for term in self.extra_terms)

    @property
    def losses(self) -> Tuple[str, ...]:
        """Loss groups used for every stage."""
        groups = tuple(self.set_criterion.losses)
        if not self.box_loss:
            groups = tuple(g for g in groups if g != "boxes")
        return groups

    @property
    def match_costs(self) -> Tuple[str, ...]:
        """Cost kinds of the matcher (no box cost when the box loss is off)."""
        return ("cls", "box", "mask") if self.box_loss else ("cls", "mask")

    def resolve_generator(self, generator: GeneratorLike) -> Optional[torch.Generator]:
        """Turn a seed / numpy generator / torch generator / None into a torch generator (or None)."""
        if generator is None:
            return self._generator
        if isinstance(generator, torch.Generator):
            return generator
        if isinstance(generator, np.random.Generator):
            return torch.Generator().manual_seed(int(generator.integers(0, _SEED_BOUND)))
        if isinstance(generator, (int, np.integer)):
            return torch.Generator().manual_seed(int(generator))
        raise TypeError(f"unsupported generator type {type(generator).__name__}")

    def get_rng_state(self) -> Optional[torch.Tensor]:
        """State of the criterion's own generator (``None`` without a seed), for checkpointing."""
        return None if self._generator is None else self._generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        """Restore :meth:`get_rng_state` (creates the generator if the criterion had no seed)."""
        if self._generator is None:
            self._generator = torch.Generator()
        self._generator.set_state(state)

    # ------------------------------------------------------------------ matching
    @torch.no_grad()
    def match_tracks(
        self,
        outputs_per_frame: List[Dict],
        targets: List[List[Dict[str, torch.Tensor]]],
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Match-once assignment of every track to a slot.

        Args:
            outputs_per_frame: T frame outputs (final layer ``pred_logits/pred_masks/pred_boxes``).
            targets: B x T target dicts.
            generator: random source of the matcher's points (point mode).

        Returns:
            ``(slots, first_frame)``: per clip ``(n,)`` int64 CPU tensors (-1 = never matched/valid).
        """
        slots, first_frame = [], []
        for b, clip in enumerate(targets):
            num_tracks = len(clip[0]["labels"])
            slot = torch.full((num_tracks,), -1, dtype=torch.int64)
            first = torch.full((num_tracks,), -1, dtype=torch.int64)
            for t, tgt in enumerate(clip):
                new = _valid(tgt).cpu() & (slot < 0)
                if not bool(new.any()):
                    continue
                new_idx = torch.nonzero(new).flatten()
                dev_idx = new_idx.to(tgt["labels"].device)
                out = outputs_per_frame[t].get("match_outputs") or outputs_per_frame[t]
                cost = self.matcher.cost_matrix(
                    out["pred_logits"][b],
                    out["pred_masks"][b],
                    out["pred_boxes"][b],
                    tgt["labels"][dev_idx],
                    tgt["masks"][dev_idx.to(tgt["masks"].device)],
                    tgt["boxes"][dev_idx.to(tgt["boxes"].device)],
                    cost=self.match_costs,
                    generator=generator,
                    tgt_is_thing=tgt["is_thing"][dev_idx.to(tgt["is_thing"].device)] if "is_thing" in tgt else None,
                ).cpu()
                taken = slot[slot >= 0]
                cost[taken] = TAKEN_SLOT_COST
                rows, cols = self.matcher.solve(cost)
                taken_set = set(taken.tolist())
                for r, c in zip(rows.tolist(), cols.tolist()):
                    if r in taken_set:
                        logger.warning("clip %d frame %d: no free slot left for track %d", b, t, int(new_idx[c]))
                        continue
                    slot[new_idx[c]] = r
                    first[new_idx[c]] = t
            slots.append(slot)
            first_frame.append(first)
        return slots, first_frame

    # ------------------------------------------------------------------ per-frame targets
    def frame_pairs(
        self, slot: torch.Tensor, first: torch.Tensor, valid: torch.Tensor, t: int
    ) -> Tuple[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]:
        """(slot, track) pairs of one clip at frame ``t``.

        Returns:
            ``(label_pairs, box_pairs)``, each ``(slot idx, track idx)`` int64 CPU, sorted by slot.
            ``label_pairs`` get class + mask losses (tracks seen at or before ``t``; absent ones only
            unless ``absent_as_no_object``); ``box_pairs`` get box losses (valid tracks only).
        """
        valid = valid.cpu()
        seen = (slot >= 0) & (first >= 0) & (first <= t)
        labelled = seen & valid if self.absent_as_no_object else seen
        boxed = seen & valid

        def pairs(keep: torch.Tensor):
            tracks = torch.nonzero(keep).flatten()
            order = torch.argsort(slot[tracks])
            tracks = tracks[order]
            return slot[tracks], tracks

        return pairs(labelled), pairs(boxed)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        outputs_per_frame: List[Dict],
        targets: List[List[Dict[str, torch.Tensor]]],
        generator: GeneratorLike = None,
    ) -> Dict[str, torch.Tensor]:
        """Weighted clip losses.

        Args:
            outputs_per_frame: T dicts (MaskDINO-style): ``pred_logits (B, N, C)``,
                ``pred_masks (B, N, h, w)``, ``pred_boxes (B, N, 4)``, ``aux_outputs`` (list of dicts),
                optional ``interm_outputs`` (dict).
            targets: B lists of T dicts: ``labels (n,)``, ``masks (n, H, W)`` (padded),
                ``boxes (n, 4)`` normalised cxcywh, ``valid (n,)`` bool, ``ids (n,)``, optionally
                ``is_thing (n,)`` bool (panoptic); every frame of a clip lists the same tracks in the same order.
            generator: torch generator, numpy generator or int seed; all randomness (frame
                skipping, point sampling) comes from it (or from the criterion's seed / the global
                torch RNG when ``None``).

        Returns:
            dict name -> weighted 0-d tensor (``loss_ce``, ``loss_mask``, ..., ``_{i}``, ``_interm``).
        """
        num_frames, num_clips = len(outputs_per_frame), len(targets)
        self._check_targets(targets, num_frames)
        targets = self._targets_on_grid(targets, outputs_per_frame)
        gen = self.resolve_generator(generator)
        device = outputs_per_frame[-1]["pred_logits"].device

        supervised = sample_supervised_frames(num_clips, num_frames, self.reduced_supervision, gen)
        slots, first_frame = self.match_tracks(outputs_per_frame, targets, gen)

        local_count = sum(
            int(_valid(targets[b][t]).sum())
            for b in range(num_clips)
            for t in range(num_frames)
            if supervised[b, t]
        )
        num_masks = reduce_num_instances(local_count, device)

        totals: Dict[str, torch.Tensor] = {}
        for t in range(num_frames):
            clips = [b for b in range(num_clips) if supervised[b, t]]
            if not clips:
                continue
            frame_losses = self.frame_losses(
                outputs_per_frame[t], [targets[b][t] for b in clips], clips,
                [slots[b] for b in clips], [first_frame[b] for b in clips], t, num_masks, gen,
            )
            for k, v in frame_losses.items():
                totals[k] = totals[k] + v if k in totals else v

        self._fill_missing_image_level_losses(totals, outputs_per_frame)
        self.last_assignment = {
            "slots": slots,
            "first_frame": first_frame,
            "supervised": supervised,
            "num_masks": num_masks,
        }
        weighted = self._weighted(totals)
        for term in self.extra_terms:
            for k, v in term(outputs_per_frame, targets, self.last_assignment).items():
                if k in weighted:
                    raise KeyError(f"extra loss term {type(term).__name__} returns {k!r}, which already exists")
                weighted[k] = v
        return weighted

    def _targets_on_grid(self, targets: List[List[Dict[str, torch.Tensor]]], outputs_per_frame: List[Dict]
                         ) -> List[List[Dict[str, torch.Tensor]]]:
        """Dense mode: every target mask resized once to the prediction grid.

        In dense mode (``num_points=None`` in both the criterion and the matcher) every stage's match and mask
        loss reads the targets bilinearly at the pixel centres of the (shared) prediction grid. Doing that once
        per clip instead of once per (stage, frame, image) gives the same numbers (a same-size resize is the
        identity) and removes about a third of the criterion's cost on a CPU: indexing, converting and resizing the
        full-resolution masks ~10 times per frame (measured back to back on a 2-core CPU: 100 -> 63 ms per
        criterion call of the demo's warm-up step, the whole step 4% faster, a clip step 2%). Point mode needs
        the full-resolution masks and keeps them.
        """
        if self.set_criterion.num_points is not None or self.matcher.num_points is not None:
            return targets
        grids = {tuple(m.shape[-2:]) for m in _all_pred_masks(outputs_per_frame)}
        if len(grids) != 1:  # stages on different grids: each resizes the full-resolution targets itself
            return targets
        grid = grids.pop()
        dtype = outputs_per_frame[0]["pred_masks"].dtype
        resized = []
        for clip in targets:
            frames = []
            for tgt in clip:
                masks = tgt["masks"]
                on_grid = resize_masks_to_grid(masks.to(dtype), grid).view(masks.shape[0], *grid)
                frames.append({**tgt, "masks": on_grid})
            resized.append(frames)
        return resized

    def frame_losses(
        self,
        frame_outputs: Dict,
        frame_targets: List[Dict[str, torch.Tensor]],
        clips: Sequence[int],
        slots: Sequence[torch.Tensor],
        first_frame: Sequence[torch.Tensor],
        t: int,
        num_masks: float,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, torch.Tensor]:
        """Unweighted losses of frame ``t`` for the supervised ``clips`` (all stages)."""
        crit = self.set_criterion
        outputs = _select_batch(frame_outputs, clips)
        label_indices, box_indices, loss_targets = [], [], []
        for tgt, slot, first in zip(frame_targets, slots, first_frame):
            valid = _valid(tgt)
            label_pairs, box_pairs = self.frame_pairs(slot, first, valid, t)
            label_indices.append(label_pairs)
            box_indices.append(box_pairs)
            masks = tgt["masks"]
            if not bool(valid.all()):
                # Absent tracks: empty mask target, whatever the data put there.
                masks = masks * valid.to(masks.device)[:, None, None].to(masks.dtype)
            loss_target = {"labels": tgt["labels"], "masks": masks, "boxes": tgt["boxes"]}
            if "is_thing" in tgt:  # panoptic: no box loss for stuff targets
                loss_target["is_thing"] = tgt["is_thing"]
            loss_targets.append(loss_target)

        def stage(out: Dict, suffix: str) -> Dict[str, torch.Tensor]:
            result = {}
            for group in self.losses:
                indices = box_indices if group == "boxes" else label_indices
                terms = crit.get_loss(group, out, loss_targets, indices, num_masks, generator)
                result.update({k + suffix: v for k, v in terms.items()})
            return result

        losses = stage(outputs, "")
        for i, aux in enumerate(self._aux_stages(outputs)):
            losses.update(stage(aux, f"_{i}"))
        use_interm = self.interm_loss and outputs.get("interm_outputs") is not None
        use_dn = outputs.get("dn") is not None
        if not (use_interm or use_dn):
            return losses
        # image-level terms: the frame's valid instances only
        valid_targets = []
        for tgt in frame_targets:
            keep = _valid(tgt)
            keys = ("labels", "masks", "boxes") + (("is_thing",) if "is_thing" in tgt else ())
            valid_targets.append({k: tgt[k][keep.to(tgt[k].device)] for k in keys})
        if use_interm:
            interm = outputs["interm_outputs"]
            indices = self.matcher(interm, valid_targets, cost=self.match_costs, generator=generator)
            for group in self.losses:
                terms = crit.get_loss(group, interm, valid_targets, indices, num_masks, generator)
                losses.update({k + "_interm": v for k, v in terms.items()})
        if use_dn:
            losses.update(self.denoising_losses(outputs, valid_targets, num_masks, generator))
        return losses

    def denoising_losses(
        self,
        outputs: Dict,
        valid_targets: List[Dict[str, torch.Tensor]],
        num_masks: float,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, torch.Tensor]:
        """MaskDINO's denoising losses of a frame whose decoder had DN queries (the image-mode frame 0).

        Every DN query reconstructs a known target (no matching): group ``g`` of video ``b`` holds copies of its
        valid instances in order, so the pairs come from the layout alone. As in MaskDINO the normaliser is
        ``num_masks`` times the number of DN groups, and the terms are the set criterion's ``dn_losses``
        (``_dn`` for the final stage, ``_dn_{i}`` for the earlier ones).

        Args:
            outputs: the frame's outputs after :func:`_select_batch` (``dn`` bookkeeping, ``dn_outputs``).
            valid_targets: per selected video, its valid instances at this frame, in the order the DN
                queries were built from.
        """
        crit = self.set_criterion
        if crit.dn == "no":
            if "dn" not in self._warned_keys:
                logger.warning("the decoder made denoising queries but set_criterion.dn='no': no DN loss is "
                               "computed (set model.criterion.set_criterion.dn to 'standard' or 'seg')")
                self._warned_keys.add("dn")
            return {}
        device = outputs["pred_logits"].device
        indices, scalar = crit._dn_indices(valid_targets, outputs["dn"], device)
        groups = self._dn_groups()
        dn_outputs = outputs["dn_outputs"]
        norm = num_masks * scalar
        losses = crit.stage_losses(dn_outputs, valid_targets, indices, norm, "_dn", generator, groups)
        for i, aux in enumerate(self._aux_stages(dn_outputs)):
            losses.update(crit.stage_losses(aux, valid_targets, indices, norm, f"_dn_{i}", generator, groups))
        return losses

    # ------------------------------------------------------------------ utilities
    def _dn_groups(self) -> List[str]:
        """The loss groups of the denoising terms: the set criterion's ``dn_losses`` this criterion computes."""
        return [g for g in self.set_criterion.dn_losses if g in self.losses]

    def _aux_stages(self, outputs: Dict) -> List[Dict]:
        """The auxiliary decoder layers' outputs that get losses (none without ``deep_supervision``)."""
        return list(outputs.get("aux_outputs", []) or []) if self.deep_supervision else []

    def _fill_missing_image_level_losses(self, totals: Dict[str, torch.Tensor], outputs_per_frame: List[Dict]) -> None:
        """Zero ``_dn`` / ``_interm`` terms that this iteration could not compute, so every iteration (and every
        process) reports the same loss keys.

        The DN terms (and, without ``interm_loss_every_frame``, the interm terms) exist only on frame 0; when
        reduced supervision skips frame 0 for every clip of the batch they would be missing. detectron2's trainer
        averages the loss dicts of all processes key by key and fails when one process lacks a key (seen: 2-process
        CPU DDP, ``KeyError: 'loss_ce_dn'``); detrex's image criterion fills zeros for the same reason.
        """
        crit = self.set_criterion
        num_stages = max(len(self._aux_stages(o)) for o in outputs_per_frame)
        expected = []
        if crit.dn != "no" and any(o.get("dn") is not None for o in outputs_per_frame):
            groups = self._dn_groups()
            for suffix in ["_dn"] + [f"_dn_{i}" for i in range(num_stages)]:
                expected += [k + suffix for g in groups for k in BASE_LOSS_KEYS[g]]
        if self.interm_loss and any(o.get("interm_outputs") is not None for o in outputs_per_frame):
            expected += [k + "_interm" for g in self.losses for k in BASE_LOSS_KEYS[g]]
        like = outputs_per_frame[-1]["pred_logits"]
        for k in expected:
            if k not in totals:
                totals[k] = like.new_zeros(())

    def _weighted(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = {}
        for k, v in losses.items():
            if k not in self.weight_dict:
                if k not in self._warned_keys:
                    logger.warning("loss %s has no weight in weight_dict: dropped", k)
                    self._warned_keys.add(k)
                continue
            out[k] = v * self.weight_dict[k]
        return out

    @staticmethod
    def _check_targets(targets: List[List[Dict]], num_frames: int) -> None:
        for b, clip in enumerate(targets):
            if len(clip) != num_frames:
                raise ValueError(f"clip {b} has {len(clip)} target frames, outputs have {num_frames}")
            n = len(clip[0]["labels"])
            for t, tgt in enumerate(clip):
                if len(tgt["labels"]) != n:
                    raise ValueError(f"clip {b} frame {t}: {len(tgt['labels'])} tracks, frame 0 has {n}")
                if "ids" in tgt and "ids" in clip[0] and not torch.equal(tgt["ids"].cpu(), clip[0]["ids"].cpu()):
                    raise ValueError(f"clip {b} frame {t}: track ids differ from frame 0 (order must be fixed)")

    def extra_repr(self) -> str:
        return (
            f"reduced_supervision={self.reduced_supervision}, absent_as_no_object={self.absent_as_no_object}, "
            f"interm_loss={self.interm_loss}, box_loss={self.box_loss}"
        )


def _all_pred_masks(tree) -> List[torch.Tensor]:
    """Every ``pred_masks`` tensor in nested frame outputs (final, aux, interm and denoising stages)."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "pred_masks" and isinstance(value, torch.Tensor):
                found.append(value)
            else:
                found.extend(_all_pred_masks(value))
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            found.extend(_all_pred_masks(value))
    return found


def _valid(target: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``(n,)`` bool validity of a frame's tracks (all valid when the key is missing)."""
    if "valid" in target:
        return target["valid"].to(torch.bool)
    return torch.ones(len(target["labels"]), dtype=torch.bool, device=target["labels"].device)


#: Batch-first tensors of a MaskDINO-style stage output (other entries are passed through untouched).
PRED_KEYS = ("pred_logits", "pred_masks", "pred_boxes")


def _select_batch(outputs: Dict, clips: Sequence[int]) -> Dict:
    """Restrict a frame's MaskDINO output dict (final, ``aux_outputs``, ``interm_outputs``) to ``clips``.

    Selecting (rather than weighting by zero) keeps skipped clips entirely out of the loss graph.
    """

    def select(stage: Dict) -> Dict:
        out = dict(stage)
        for key in PRED_KEYS:
            if key in stage and stage[key] is not None:
                index = torch.as_tensor(list(clips), dtype=torch.int64, device=stage[key].device)
                out[key] = stage[key].index_select(0, index)
        return out

    selected = select(outputs)
    if outputs.get("aux_outputs") is not None:
        selected["aux_outputs"] = [select(aux) for aux in outputs["aux_outputs"]]
    if outputs.get("interm_outputs") is not None:
        selected["interm_outputs"] = select(outputs["interm_outputs"])
    if outputs.get("dn") is not None:
        # the DN queries' predictions (MaskDINO keeps them in mask_dict["output_known_lbs_bboxes"])
        known = outputs["dn"]["output_known_lbs_bboxes"]
        selected["dn_outputs"] = select(known)
        selected["dn_outputs"]["aux_outputs"] = [select(aux) for aux in known.get("aux_outputs", []) or []]
    return selected

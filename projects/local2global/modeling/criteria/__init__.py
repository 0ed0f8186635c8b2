"""Clip-level loss terms that plug into :class:`~local2global.modeling.criteria.video_criterion.VideoSetCriterion`.

Each term is a module called as ``term(outputs_per_frame, targets, assignment)`` (the criterion's
``extra_terms``) with the frame outputs, the targets the criterion used (on the prediction grid in dense mode)
and the criterion's match-once assignment of that call (``slots``, ``first_frame``, ``supervised``,
``num_masks``); it returns already weighted losses under keys of its own. They live here rather than in
``criterion.py`` / ``video_criterion.py`` because they belong to one method each (a switch of a recipe, like a
tracker) while those two files are the shared MaskDINO / match-once machinery every model uses.

==========================  =====================  ==========================================================
term                        from                   what it adds
==========================  =====================  ==========================================================
``BoxDedupLoss``            InsPro (Eq. 4)         pushes the unmatched boxes nearest a ground-truth box away
``CrossFrameMaskLoss``      IFR (Eq. 6-7)          each slot's embedding also predicts its track's mask on the
                                                   clip's other frames (``needs_mask_embeds = True``)
==========================  =====================  ==========================================================
"""

from .box_dedup import BoxDedupLoss, box_dedup_per_gt
from .cross_frame_mask import CrossFrameMaskLoss, mask_bce_dice

__all__ = ["BoxDedupLoss", "box_dedup_per_gt", "CrossFrameMaskLoss", "mask_bce_dice"]

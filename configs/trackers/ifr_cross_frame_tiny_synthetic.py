"""IFR's cross-frame mask loss on the tiny synthetic recipe (any tracker; here Local2Global's).

Each slot's mask embedding of frame t also predicts its track's mask on the clip's other frames (einsum with their
mask features), BCE + dice with lambda_e = 0.3 times the mask weights, dense like the recipe's other mask losses
(the term's point settings follow the set criterion's). The one override that turns it on in any config::

    'model.criterion.extra_terms=[{_target_: local2global.modeling.criteria.CrossFrameMaskLoss}]'

(this file also ties the term's weights and point sampling to the set criterion's). Evaluate with IFR's online
test-time augmentation: ``scripts/eval_tta.py --config-file ... --tta-scales 48,64,80``.
"""

from detectron2.config import LazyCall as L

from local2global.modeling.criteria import CrossFrameMaskLoss

from ..local2global_tiny_synthetic import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.criterion.extra_terms = [
    L(CrossFrameMaskLoss)(
        lambda_e=0.3,
        mask_weight="${...set_criterion.mask_weight}",
        dice_weight="${...set_criterion.dice_weight}",
        num_points="${...set_criterion.num_points}",
        oversample_ratio="${...set_criterion.oversample_ratio}",
        importance_sample_ratio="${...set_criterion.importance_sample_ratio}",
        average_other_frames=False,
    )
]

train.output_dir = "./output/trackers/ifr_cross_frame_tiny_synthetic"

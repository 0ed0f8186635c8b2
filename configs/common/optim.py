"""AdamW (lr 5e-5, weight decay 0.05; paper phase 2) with detectron2's default parameter groups, no weight decay on
normalisation layers, backbone lr x0.1 and the ``train.trainable_params`` freezing applied first.
"""

import torch
from detectron2.config import LazyCall as L

from local2global.engine.optim import BackboneLRFactor, get_trainable_optimizer_params

optimizer = L(torch.optim.AdamW)(
    params=L(get_trainable_optimizer_params)(
        # `model` is set by the training script (cfg.optimizer.params.model = model)
        trainable_params="${train.trainable_params}",
        base_lr="${..lr}",
        weight_decay_norm=0.0,
        lr_factor_func=L(BackboneLRFactor)(factor=0.1, prefixes=["backbone."]),
    ),
    lr=5e-5,
    betas=(0.9, 0.999),
    weight_decay=0.05,
)

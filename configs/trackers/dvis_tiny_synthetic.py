"""DVIS's online referring tracker on the tiny synthetic recipe, on a frozen segmenter.

Stage 2 of DVIS's two-stage protocol: the segmenter (backbone, pixel encoder, MaskDINO decoder) comes from
``train.init_checkpoint`` (stage 1: an image-mode segmenter, e.g. ``make demo``'s warm-up or
``configs/trackers/minvis_tiny_synthetic.py`` trained with ``train.eval_only=False``), is kept in eval mode without
gradients, and only the tracker trains (the optimizer receives the parameters with ``requires_grad``; the
checkpoint's missing ``tracker.*`` keys are expected)::

    python scripts/train_net.py --config-file configs/trackers/dvis_tiny_synthetic.py \\
        train.init_checkpoint=output/demo/warmup/model_final.pth

As DVIS (``configs/trackers/dvis_r50_ytvis19.py`` has the full protocol): 6 referring blocks, 5-frame clips, every
frame supervised, no box and no encoder loss, class 2 / mask 5 / dice 5 (matching and loss), AdamW 1e-4 with weight
decay 0.05, step x0.1 at 70%, guided matching on the segmenter's predictions for the first half of
``train.max_iter``. Tiny: the tracker follows the model width (d = 64) with a 128-wide FFN (the tiny decoder's), and
the mask losses are dense (every pixel of the 16x16 mask grid) as in the other tiny recipes.
"""

from ..common.trackers import dvis_tracker as _dvis_tracker  # _names stay out of the loaded config
from ..local2global_tiny_synthetic import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker = _dvis_tracker
model.tracker.dim_feedforward = 128  # the tiny decoder's width

# DVIS's loss: per-frame set loss, matched once per track at its first appearance, every frame and block supervised
model.criterion.reduced_supervision = False
model.criterion.interm_loss = False
model.criterion.box_loss = False
model.criterion.set_criterion.losses = ["labels", "masks"]
model.criterion.set_criterion.class_weight = 2.0
model.criterion.set_criterion.mask_weight = 5.0
model.criterion.set_criterion.dice_weight = 5.0
model.criterion.set_criterion.matcher.cost_class = 2.0
model.criterion.set_criterion.matcher.cost_mask = 5.0
model.criterion.set_criterion.matcher.cost_dice = 5.0
# aux weights _0 .. _{L-1} for the tracker's blocks (blocks 0..L-2 are aux_outputs)
model.criterion.set_criterion.dec_layers = "${...tracker.num_layers}"

dataloader.train.mapper.num_frames = 5

optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
optimizer.params.lr_factor_func.factor = 1.0  # the backbone is frozen: no factor to apply
lr_multiplier.scheduler.milestones = [0.7]

train.output_dir = "./output/trackers/dvis_tiny_synthetic"

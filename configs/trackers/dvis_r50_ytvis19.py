"""Stage 2 of the DVIS recipe on YouTube-VIS 2019: DVIS's online referring tracker on the frozen R-50 segmenter.

As DVIS (``zhang-tao-whu/DVIS``, ``configs/youtubevis_2019/DVIS_Online_R50.yaml`` on ``MinVIS_R50.yaml``): the
segmenter of stage 1 (``segmenter_r50_ytvis19_image.py``, the image-mode fine-tuning on this dataset) is loaded from
``train.init_checkpoint`` and frozen (eval mode, no gradients; only the tracker's parameters reach the optimizer, the
checkpoint's missing ``tracker.*`` keys are expected). The tracker: 6 referring blocks, d = 256, 8 heads, FFN 2048,
dropout 0, sigmoid class head (see ``local2global.modeling.trackers.dvis``: 9.68M parameters, DVIS's Table 9).
Training: 5-frame clips (frames within +-2 of a reference frame) mixed with COCO pseudo-videos (1 : 0.75), batch 8,
AdamW 1e-4, weight decay 0.05, 40k iterations, x0.1 at 28k (70%), gradient clip 0.01, no warm-up; every frame
supervised, match once per track at its first appearance, class 2 / mask BCE 5 / dice 5 with 12,544 sampled
points, no box and no encoder loss; the matching uses the segmenter's predictions in the first half
(``guided_matching_iters = train.max_iter // 2``, follows ``train.max_iter=...``). The segmenter keeps the
project's 300 queries (DVIS's Mask2Former has 100)::

    python scripts/train_net.py --config-file configs/trackers/segmenter_r50_ytvis19_image.py --num-gpus 8
    python scripts/train_net.py --config-file configs/trackers/dvis_r50_ytvis19.py --num-gpus 8

DVIS++'s query noise: ``model.tracker.query_noise=wa model.tracker.noise_ratio=0.5``.
"""

from ..common.trackers import dvis_tracker as _dvis_tracker  # _names stay out of the loaded config
from .segmenter_r50_ytvis19_image import dataloader, lr_multiplier, model, optimizer, train

model.tracker = _dvis_tracker

# DVIS's loss (Mask2Former's video set loss, matched once per track): class 2, mask 5, dice 5, every block
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
model.criterion.set_criterion.dec_layers = "${...tracker.num_layers}"

dataloader.train.mapper.num_frames = 5
dataloader.train.mapper.sampling_frame_range = 2

optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
lr_multiplier.scheduler.milestones = [0.7]
lr_multiplier.warmup_factor = 1.0

train.max_iter = 40000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.01
train.init_checkpoint = "./output/trackers/segmenter_r50_ytvis19_image/model_final.pth"
train.output_dir = "./output/trackers/dvis_r50_ytvis19"
train.checkpointer.period = 5000

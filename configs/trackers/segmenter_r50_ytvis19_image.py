"""Stage 1 of the DVIS recipe on YouTube-VIS 2019: the R-50 MaskDINO segmenter fine-tuned per dataset in image mode.

DVIS (``zhang-tao-whu/DVIS``, ``configs/youtubevis_2019/MinVIS_R50.yaml``) first trains the segmenter as MinVIS
does: an image segmenter on 1-frame clips of the video dataset mixed with COCO images mapped to its vocabulary
(COCO : YouTube-VIS sampled 1 : 0.75), AdamW 1e-4, weight decay 0.05, backbone lr x0.1, gradient clip 0.01, batch 8,
20k iterations with x0.1 at 14k (70%), from a COCO-trained segmenter (here detrex's MaskDINO R-50 COCO instance
model, as ``configs/local2global_r50_coco_phase1.py``). ``model.tracker`` is MinVIS (it adds no parameters and
trains nothing; the segmenter's image-mode losses are MaskDINO's: class, mask, box, encoder), so this stage is also
the MinVIS baseline: evaluate it with ``--eval-only``. The two stages chain by checkpoint:

    python scripts/train_net.py --config-file configs/trackers/segmenter_r50_ytvis19_image.py --num-gpus 8
    python scripts/train_net.py --config-file configs/trackers/dvis_r50_ytvis19.py --num-gpus 8 \\
        train.init_checkpoint=output/trackers/segmenter_r50_ytvis19_image/model_final.pth   # (the default)

Stage 2 (``dvis_r50_ytvis19.py``) loads this checkpoint (its missing ``tracker.*`` keys are expected), freezes the
segmenter and trains DVIS's referring tracker.
"""

from local2global.modeling.trackers import MinVISTracker
from detectron2.config import LazyCall as L

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker = L(MinVISTracker)(similarity="embedding")
# image mode: one frame per clip (the COCO pseudo clips follow mapper.num_frames), nothing to skip
dataloader.train.mapper.num_frames = 1
dataloader.train.pseudo_ratio = 1.0 / 1.75  # DVIS's DATASET_RATIO [1.0 (COCO), 0.75 (YouTube-VIS)]
dataloader.train.total_batch_size = 8
model.criterion.reduced_supervision = False

optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
optimizer.params.lr_factor_func.factor = 0.1  # DVIS / Mask2Former's BACKBONE_MULTIPLIER
lr_multiplier.scheduler.milestones = [0.7]
lr_multiplier.warmup_factor = 1.0  # DVIS: WARMUP_FACTOR 1.0 (no warm-up)

train.max_iter = 20000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.01
train.init_checkpoint = "weights/maskdino_r50_50ep_300q_hid2048_3sd1_instance_maskenhanced_mask46.3ap_box51.7ap.pth"
train.output_dir = "./output/trackers/segmenter_r50_ytvis19_image"
train.checkpointer.period = 5000

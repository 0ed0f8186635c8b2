"""Stage 1 of the DVIS recipe on YouTube-VIS 2021: as ``segmenter_r50_ytvis19_image.py`` (image mode, MinVIS tracker),
on YouTube-VIS 2021 mixed with COCO 1 : 1 (DVIS's ``configs/youtubevis_2021/MinVIS_R50.yaml``); stage 2 is
``dvis_r50_ytvis21.py``::

    python scripts/train_net.py --config-file configs/trackers/segmenter_r50_ytvis21_image.py --num-gpus 8
    python scripts/train_net.py --config-file configs/trackers/dvis_r50_ytvis21.py --num-gpus 8
"""

from local2global.modeling.trackers import MinVISTracker
from detectron2.config import LazyCall as L

from ..local2global_r50_ytvis21 import dataloader, lr_multiplier, model, optimizer, train

model.tracker = L(MinVISTracker)(similarity="embedding")
dataloader.train.mapper.num_frames = 1
dataloader.train.pseudo_ratio = 0.5  # DVIS's DATASET_RATIO [1.0, 1.0]
dataloader.train.total_batch_size = 8
model.criterion.reduced_supervision = False

optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
optimizer.params.lr_factor_func.factor = 0.1
lr_multiplier.scheduler.milestones = [0.7]
lr_multiplier.warmup_factor = 1.0

train.max_iter = 20000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.01
train.init_checkpoint = "weights/maskdino_r50_50ep_300q_hid2048_3sd1_instance_maskenhanced_mask46.3ap_box51.7ap.pth"
train.output_dir = "./output/trackers/segmenter_r50_ytvis21_image"
train.checkpointer.period = 5000

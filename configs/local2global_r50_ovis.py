"""Phase 2 on OVIS: as the YouTube-VIS recipe (4-frame clips + COCO pseudo-videos mapped to the 25 OVIS classes,
AdamW 5e-5, 120k iterations, drop at 0.5, batch 8, clip 0.01, from phase 1), test top-k 20.
"""

from detectron2.config import LazyCall as L

from local2global.data import filter_images_by_category

from .common.data.coco_pseudo import dataloader as _coco
from .common.data.ovis import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.local2global_r50 import model

model.num_classes = 25
model.postprocessor.test_topk = 20

# (COCO images without an object of the target vocabulary are dropped, so every pseudo clip has targets)
dataloader.train.pseudo_dataset = L(filter_images_by_category)(
    dataset_dicts=_coco.train.dataset, category_map="${..pseudo_mapper.category_map}"
)
dataloader.train.pseudo_mapper = _coco.train.mapper
dataloader.train.pseudo_mapper.num_frames = "${..mapper.num_frames}"
dataloader.train.pseudo_mapper.category_map = "ovis"
dataloader.train.pseudo_mapper.augmentations = "${..mapper.augmentations}"
dataloader.train.pseudo_ratio = 0.5
dataloader.train.total_batch_size = 8

optimizer.lr = 5e-5
lr_multiplier.scheduler.milestones = [0.5]

train.max_iter = 120000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.01
train.clip_grad.params.norm_type = 2
train.init_checkpoint = "./output/local2global_r50_coco_phase1/model_final.pth"
train.output_dir = "./output/local2global_r50_ovis"
train.eval_period = 0
train.checkpointer.period = 10000

"""Phase 2 on YouTube-VIS 2019 (paper §4.2): everything trainable (backbone lr x0.1), 4-frame clips mixed with COCO
pseudo-videos, AdamW 5e-5, 120k iterations with x0.1 at 60k (0.5 of train.max_iter), batch 8, gradient clip 0.01,
initialised from the phase-1 output.

    python scripts/train_net.py --config-file configs/local2global_r50_ytvis19.py --num-gpus 4
"""

from detectron2.config import LazyCall as L

from local2global.data import filter_images_by_category

from .common.data.coco_pseudo import dataloader as _coco
from .common.data.ytvis_2019 import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.local2global_r50 import model

model.num_classes = 40
model.postprocessor.test_topk = 10

# COCO pseudo-videos (GenVIS-style joint training), COCO classes mapped to the YTVIS-2019 vocabulary
# (COCO images without an object of the target vocabulary are dropped, so every pseudo clip has targets)
dataloader.train.pseudo_dataset = L(filter_images_by_category)(
    dataset_dicts=_coco.train.dataset, category_map="${..pseudo_mapper.category_map}"
)
dataloader.train.pseudo_mapper = _coco.train.mapper
dataloader.train.pseudo_mapper.num_frames = "${..mapper.num_frames}"
dataloader.train.pseudo_mapper.category_map = "ytvis_2019"
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
train.output_dir = "./output/local2global_r50_ytvis19"
train.eval_period = 0  # the validation annotations are hidden: the evaluator writes results.zip at the end
train.checkpointer.period = 10000

"""The phase-2 VIS recipe every dataset shares (paper §4.2), on YouTube-VIS 2019's data files.

Everything trainable (backbone lr x0.1), 4-frame clips mixed half and half with COCO pseudo-videos (GenVIS-style
joint training: COCO classes mapped to the target vocabulary, COCO images without an object of it dropped so every
pseudo clip has targets), AdamW 5e-5, 120k iterations with x0.1 at 0.5 of ``train.max_iter``, batch 8, gradient
clip 0.01, initialised from the phase-1 output. A dataset's recipe sets its data files, ``model.num_classes``, the
pseudo-videos' ``category_map``, the test top-k and its output folder.
"""

from detectron2.config import LazyCall as L

from local2global.data import filter_images_by_category

from .data.coco_pseudo import dataloader as _coco
from .data.ytvis_2019 import dataloader
from .optim import optimizer
from .schedule import lr_multiplier
from .train import train
from ..models.local2global_r50 import model

model.num_classes = 40
model.postprocessor.test_topk = 10

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
train.eval_period = 0  # the validation annotations are hidden: the evaluator writes results.zip at the end
train.checkpointer.period = 10000

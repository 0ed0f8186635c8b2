"""The tiny Local2Global in panoptic mode on VIPSeg-layout data: a CPU recipe for tests (``tests/test_vps_model.py``).

The data are ``vipseg_train`` / ``vipseg_val`` under ``$DETECTRON2_DATASETS/VIPSeg/VIPSeg_720P`` (the tests write a
small dataset in the official layout there); the model is ``configs/models/local2global_tiny.py`` with VIPSeg's 124
classes and the panoptic post-processor, the data config ``configs/common/data/vipseg.py`` with tiny sizes.

    DETECTRON2_DATASETS=/path python scripts/train_net.py --config-file configs/local2global_tiny_vipseg.py \
        train.max_iter=2
"""

from detectron2.config import LazyCall as L
from detectron2.data import transforms as T

import local2global.engine.device  # noqa: F401  (registers the ${l2g_device:} resolver)
from local2global.data.vipseg_categories import VIPSEG_NUM_CLASSES, vipseg_metadata
from local2global.modeling.postprocessing.video_panoptic import PanopticVideoPostprocessor

from .common.data.vipseg import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.local2global_tiny import model

model.num_classes = VIPSEG_NUM_CLASSES
model.postprocessor = L(PanopticVideoPostprocessor)(
    thing_classes=sorted(vipseg_metadata()["thing_dataset_id_to_contiguous_id"].values()),
)

dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(32, 40), max_size=96, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.num_frames = 3
dataloader.train.mapper.sampling_frame_range = 2
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=32, max_size=96)]
dataloader.test.num_workers = 0

optimizer.lr = 2e-4
optimizer.weight_decay = 0.05
optimizer.params.lr_factor_func.factor = 1.0
lr_multiplier.scheduler.milestones = [0.8]
lr_multiplier.warmup_length = 0.02

train.device = "${l2g_device:}"
train.ddp.device_ids = None
train.max_iter = 2
train.eval_period = 0
train.log_period = 1
train.checkpointer.period = 1000
train.checkpointer.max_to_keep = 1
train.seed = 0
train.output_dir = "./output/local2global_tiny_vipseg"
train.init_checkpoint = ""

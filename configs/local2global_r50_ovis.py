"""Phase 2 on OVIS: the shared phase-2 recipe (``common/vis_phase2.py``: 4-frame clips + COCO pseudo-videos mapped
to the 25 OVIS classes, AdamW 5e-5, 120k iterations, drop at 0.5, batch 8, clip 0.01, from phase 1), test top-k 20.
"""

from .common.data.ovis import dataloader as _ovis
from .common.vis_phase2 import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.dataset.names = _ovis.train.dataset.names
dataloader.test.dataset.names = _ovis.test.dataset.names
dataloader.train.pseudo_mapper.category_map = "ovis"

model.num_classes = 25
model.postprocessor.test_topk = 20

train.output_dir = "./output/local2global_r50_ovis"

"""Phase 2 on YouTube-VIS 2019 (paper §4.2): the shared phase-2 recipe (``common/vis_phase2.py``: everything
trainable, backbone lr x0.1, 4-frame clips mixed with COCO pseudo-videos, AdamW 5e-5, 120k iterations with x0.1 at
60k, batch 8, gradient clip 0.01, from the phase-1 output) on its 40 classes, test top-k 10.

    python scripts/train_net.py --config-file configs/local2global_r50_ytvis19.py --num-gpus 4
"""

from .common.vis_phase2 import dataloader, lr_multiplier, model, optimizer, train

train.output_dir = "./output/local2global_r50_ytvis19"

"""YouTube-VIS 2022 evaluation of the YouTube-VIS 2021 model (2022 has no training split of its own).

    python scripts/train_net.py --config-file configs/local2global_r50_ytvis22.py --eval-only
"""

from .local2global_r50_ytvis21 import dataloader, lr_multiplier, model, optimizer, train

dataloader.test.dataset.names = "ytvis_2022_val"
train.init_checkpoint = "./output/local2global_r50_ytvis21/model_final.pth"
train.output_dir = "./output/local2global_r50_ytvis22_eval"

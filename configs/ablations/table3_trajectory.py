"""Table 3, + aligner + trajectory (the full model, the default recipe) (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.global_pos = "trajectory"
train.output_dir = "./output/ablations/table3_trajectory"

"""Table 5, aligner FFN width 2048 (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.aligner.dim_feedforward = 2048
train.output_dir = "./output/ablations/table5_width2048"

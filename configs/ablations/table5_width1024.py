"""Table 5, aligner FFN width 1024 (default) (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.aligner.dim_feedforward = 1024
train.output_dir = "./output/ablations/table5_width1024"

"""Table 5, aligner FFN width 512 (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.aligner.dim_feedforward = 512
train.output_dir = "./output/ablations/table5_width512"

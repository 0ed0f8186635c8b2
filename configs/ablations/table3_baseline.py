"""Table 3, baseline: no L2G-aligner (the propagated queries go straight into the decoder) (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.aligner = None
train.output_dir = "./output/ablations/table3_baseline"

"""Table 3, + aligner without trajectory: static learnable per-slot anchors give g_pos and the references (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.global_pos = "static"
train.output_dir = "./output/ablations/table3_aligner"

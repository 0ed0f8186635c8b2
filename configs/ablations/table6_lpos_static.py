"""Table 6, static l_pos: learnable embedding indexed by top-K rank (default) (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.aligner.local_pos = "static"
train.output_dir = "./output/ablations/table6_lpos_static"

"""Table 6, dynamic l_pos: ref_point_head of the local tokens' encoder boxes (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.aligner.local_pos = "dynamic"
train.output_dir = "./output/ablations/table6_lpos_dynamic"

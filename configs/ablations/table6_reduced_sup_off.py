"""Table 6, reduced supervision off: every frame of the clip supervised (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.criterion.reduced_supervision = False
train.output_dir = "./output/ablations/table6_reduced_sup_off"

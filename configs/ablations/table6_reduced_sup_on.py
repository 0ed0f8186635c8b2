"""Table 6, reduced supervision on (default) (see README.md)."""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.criterion.reduced_supervision = True
train.output_dir = "./output/ablations/table6_reduced_sup_on"

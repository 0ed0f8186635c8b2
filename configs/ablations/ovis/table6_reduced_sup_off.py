"""Table 6, reduced supervision off: every frame of the clip supervised.

On OVIS: the overrides of the YouTube-VIS 2019 file of the same name (see ../README.md).
"""

from ...local2global_r50_ovis import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.criterion.reduced_supervision = False
train.output_dir = "./output/ablations/ovis/table6_reduced_sup_off"

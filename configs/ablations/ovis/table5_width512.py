"""Table 5, aligner FFN width 512.

On OVIS: the overrides of the YouTube-VIS 2019 file of the same name (see ../README.md).
"""

from ...local2global_r50_ovis import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker.aligner.dim_feedforward = 512
train.output_dir = "./output/ablations/ovis/table5_width512"

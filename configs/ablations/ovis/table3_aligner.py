"""Table 3, + aligner without trajectory (static learnable anchors).

On OVIS: the overrides of the YouTube-VIS 2019 file of the same name (see ../README.md).
"""

from ...local2global_r50_ovis import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker.global_pos = "static"
train.output_dir = "./output/ablations/ovis/table3_aligner"

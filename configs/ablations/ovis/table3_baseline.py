"""Table 3, propagation only: no aligner, static learnable anchors (the paper's reading; docs/TRACKERS.md).

On OVIS: the overrides of the YouTube-VIS 2019 file of the same name (see ../README.md).
"""

from ...local2global_r50_ovis import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker.aligner = None
model.tracker.global_pos = "static"
train.output_dir = "./output/ablations/ovis/table3_baseline"

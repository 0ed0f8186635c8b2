"""Table 3, propagation only: no aligner, static learnable anchors (the paper's reading; docs/TRACKERS.md).

On YouTube-VIS 2021: the overrides of the YouTube-VIS 2019 file of the same name (see ../README.md).
"""

from ...local2global_r50_ytvis21 import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker.aligner = None
model.tracker.global_pos = "static"
train.output_dir = "./output/ablations/ytvis21/table3_baseline"

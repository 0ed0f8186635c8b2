"""Table 6, dynamic l_pos (the decoder's ref_point_head on the local tokens' boxes).

On OVIS: the overrides of the YouTube-VIS 2019 file of the same name (see ../README.md).
"""

from ...local2global_r50_ovis import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker.aligner.local_pos = "dynamic"
train.output_dir = "./output/ablations/ovis/table6_lpos_dynamic"

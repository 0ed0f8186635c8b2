"""Table 3, baseline, second reading: no aligner; the decoder's refined boxes of t-1 are the references at t.

The other reading of "propagation only" (InsPro / TransTrack style): queries and the decoder's refined final
boxes are carried over, no Mask2Box trajectory (see docs/TRACKERS.md).
"""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.aligner = None
model.tracker.global_pos = "refined"
train.output_dir = "./output/ablations/table3_baseline_refined"

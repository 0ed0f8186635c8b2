"""Table 3, baseline (propagation only): no L2G-aligner and no trajectory (see README.md and docs/TRACKERS.md).

The propagated queries go straight into the decoder; the decoder's initial references are learnable per-slot
anchors that are not propagated (the reading taken as the paper's; ``table3_baseline_refined.py`` is the other).
"""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.tracker.aligner = None
model.tracker.global_pos = "static"
train.output_dir = "./output/ablations/table3_baseline"

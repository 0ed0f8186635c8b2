"""Tracking benchmark row: DVIS's referring tracker on the demo recipe's frozen segmenter (protocol B).

The tracker and its loss (per-frame set loss matched once per track, every frame and block supervised, no box or
encoder loss) come from ``configs/trackers/dvis_tiny_synthetic.py``; the optimiser and schedule are the demo
recipe's, the same for every row of the benchmark (DVIS's own lr 1e-4 is a fine-tuning rate for a COCO-pretrained
setting; at the benchmark's budget of ~100 iterations from random weights it would leave the tracker untrained).
"""

from ...local2global_tiny_demo import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
from ...trackers.dvis_tiny_synthetic import model as _dvis

model.tracker = _dvis.tracker
model.criterion = _dvis.criterion
train.output_dir = "./output/bench_tracking/dvis"

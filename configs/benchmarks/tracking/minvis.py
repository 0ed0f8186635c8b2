"""Tracking benchmark row: MinVIS (training-free) on the demo recipe's segmenter (protocol B)."""

from ...local2global_tiny_demo import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
from ...trackers.minvis_tiny_synthetic import model as _minvis

model.tracker = _minvis.tracker
train.eval_only = True
train.output_dir = "./output/bench_tracking/minvis"

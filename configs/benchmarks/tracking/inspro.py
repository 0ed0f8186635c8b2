"""Tracking benchmark row: InsPro-style propagation on the demo recipe (protocol A: the whole model fine-tunes)."""

from ...local2global_tiny_demo import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
from ...trackers.inspro_tiny_synthetic import model as _inspro

model.tracker = _inspro.tracker
model.criterion.extra_terms = _inspro.criterion.extra_terms  # InsPro's box de-duplication loss
train.output_dir = "./output/bench_tracking/inspro"

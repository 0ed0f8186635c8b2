"""YouTube-VIS 2021: as YouTube-VIS 2019 (same resolution and clips), its own 40 categories and files."""

from .ytvis_2019 import dataloader

dataloader.train.dataset.names = "ytvis_2021_train"
dataloader.test.dataset.names = "ytvis_2021_val"

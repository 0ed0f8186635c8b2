"""YouTube-VIS 2022: no training split of its own (the 2021 training set; same categories); validation on the
2022 set (2021 validation + 71 long videos). The evaluator reports AP_long / AP_short when the metadata lists the
long-video ids.
"""

from .ytvis_2021 import dataloader

dataloader.test.dataset.names = "ytvis_2022_val"

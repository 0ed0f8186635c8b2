"""OVIS: training clips (short side 360-480, 4 frames), test at 360, the YouTube-VIS-style evaluator.

The test top-k of OVIS is 20 (set in the experiment file: ``model.postprocessor.test_topk = 20``).
"""

from .ytvis_2019 import dataloader

dataloader.train.dataset.names = "ovis_train"
dataloader.test.dataset.names = "ovis_val"

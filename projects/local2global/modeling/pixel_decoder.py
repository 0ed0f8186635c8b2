"""Moved to :mod:`local2global.modeling.segmenter.pixel_decoder`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.pixel_decoder`` keep working.
"""

import sys

from local2global.modeling.segmenter import pixel_decoder as _module

sys.modules[__name__] = _module

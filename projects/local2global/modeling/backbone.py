"""Moved to :mod:`local2global.modeling.segmenter.backbone`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.backbone`` keep working.
"""

import sys

from local2global.modeling.segmenter import backbone as _module

sys.modules[__name__] = _module

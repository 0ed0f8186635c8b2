"""Moved to :mod:`local2global.modeling.segmenter.deformable_encoder`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.deformable_encoder`` keep working.
"""

import sys

from local2global.modeling.segmenter import deformable_encoder as _module

sys.modules[__name__] = _module

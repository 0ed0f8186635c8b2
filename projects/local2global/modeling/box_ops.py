"""Moved to :mod:`local2global.layers.box_ops`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.box_ops`` keep working.
"""

import sys

from local2global.layers import box_ops as _module

sys.modules[__name__] = _module

"""Moved to :mod:`local2global.layers.point_sampling`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.point_sampling`` keep working.
"""

import sys

from local2global.layers import point_sampling as _module

sys.modules[__name__] = _module

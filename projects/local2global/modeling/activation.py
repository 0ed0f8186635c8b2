"""Moved to :mod:`local2global.layers.activation`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.activation`` keep working.
"""

import sys

from local2global.layers import activation as _module

sys.modules[__name__] = _module

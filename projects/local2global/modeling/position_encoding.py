"""Moved to :mod:`local2global.layers.position_encoding`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.position_encoding`` keep working.
"""

import sys

from local2global.layers import position_encoding as _module

sys.modules[__name__] = _module

"""Moved to :mod:`local2global.layers.ms_deform_attn`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.ms_deform_attn`` keep working.
"""

import sys

from local2global.layers import ms_deform_attn as _module

sys.modules[__name__] = _module

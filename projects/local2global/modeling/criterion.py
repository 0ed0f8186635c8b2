"""Moved to :mod:`local2global.modeling.criteria.set_criterion`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.criterion`` keep working.
"""

import sys

from local2global.modeling.criteria import set_criterion as _module

sys.modules[__name__] = _module

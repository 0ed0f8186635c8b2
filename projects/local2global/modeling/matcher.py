"""Moved to :mod:`local2global.modeling.criteria.matcher`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.matcher`` keep working.
"""

import sys

from local2global.modeling.criteria import matcher as _module

sys.modules[__name__] = _module

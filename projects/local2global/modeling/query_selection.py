"""Moved to :mod:`local2global.modeling.segmenter.query_selection`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.query_selection`` keep working.
"""

import sys

from local2global.modeling.segmenter import query_selection as _module

sys.modules[__name__] = _module

"""Moved to :mod:`local2global.modeling.postprocessing.video_instances`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.postprocess`` keep working.
"""

import sys

from local2global.modeling.postprocessing import video_instances as _module

sys.modules[__name__] = _module

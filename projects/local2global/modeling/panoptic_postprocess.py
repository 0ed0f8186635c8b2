"""Moved to :mod:`local2global.modeling.postprocessing.video_panoptic`; this import path stays valid (the same module object).

Configs, checkpoints' ``config.yaml`` and code that import ``local2global.modeling.panoptic_postprocess`` keep working.
"""

import sys

from local2global.modeling.postprocessing import video_panoptic as _module

sys.modules[__name__] = _module

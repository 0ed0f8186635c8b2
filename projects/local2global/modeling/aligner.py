"""Compatibility name: the L2G-aligner lives in :mod:`local2global.modeling.trackers.l2g_aligner`.

Kept so that configs and code written against ``local2global.modeling.aligner`` keep importing.
"""

from local2global.modeling.trackers.l2g_aligner import LOCAL_POS_MODES, L2GAligner, L2GAlignerLayer  # noqa: F401

__all__ = ["L2GAligner", "L2GAlignerLayer", "LOCAL_POS_MODES"]

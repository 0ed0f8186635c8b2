"""Trackers: how the queries and identities of frame t-1 become those of frame t (see :mod:`.base`).

=========================  ============  ==============================================================
tracker                    family        what it is
=========================  ============  ==============================================================
``Local2GlobalTracker``    propagation   the paper's L2G-aligner + trajectory; ``aligner=None``: plain propagation
``MinVISTracker``          association   training-free Hungarian linking of the image-mode outputs
``DVISTracker``            association   DVIS's online referring tracker (6 RCA blocks) on the frozen segmenter
``InsProTracker``          propagation   InsPro: output queries + refined boxes of t-1, intra-query attention bank
=========================  ============  ==============================================================
"""

from .base import TRACKER_FAMILIES, DecoderQueries, FrameContext, Tracker, image_mode_queries, state_nbytes
from .dvis import DVISState, DVISTracker
from .inspro import InsProState, InsProTracker
from .l2g_aligner import L2GAligner, L2GAlignerLayer
from .local2global import FIRST_FRAME_MODES, GLOBAL_POS_MODES, Local2GlobalTracker, TrackState
from .minvis import AssociationState, MinVISTracker

__all__ = [
    "Tracker", "FrameContext", "DecoderQueries", "TRACKER_FAMILIES", "image_mode_queries", "state_nbytes",
    "L2GAligner", "L2GAlignerLayer", "Local2GlobalTracker", "TrackState", "FIRST_FRAME_MODES", "GLOBAL_POS_MODES",
    "MinVISTracker", "AssociationState",
    "DVISTracker", "DVISState",
    "InsProTracker", "InsProState",
]

"""InsPro-style propagation on the tiny synthetic recipe (``local2global.modeling.trackers.inspro``).

The decoder's output queries (enhanced by intra-query attention over each slot's last T outputs) and refined boxes
of frame t-1 are the queries and anchors of frame t; frame 0 is MaskDINO's image mode. The criterion adds InsPro's
box de-duplication loss (k = 5 unmatched boxes nearest each ground-truth box, beta = 0.1, weight 1). Everything else
is the Local2Global tiny recipe (same data, clips, optimiser, schedule, losses): the whole model trains, as
Local2Global's phase 2 does::

    python scripts/train_net.py --config-file configs/trackers/inspro_tiny_synthetic.py

``model.tracker.score_hidden=64`` makes eps an MLP; ``model.tracker.first_frame=learned`` starts from InsPro's
learnable query-proposal pairs instead of the image mode.
"""

from ..common.trackers import inspro_extra_terms as _inspro_extra_terms, inspro_tracker as _inspro_tracker  # _names stay out of the loaded config
from ..local2global_tiny_synthetic import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker = _inspro_tracker
model.criterion.extra_terms = _inspro_extra_terms

train.output_dir = "./output/trackers/inspro_tiny_synthetic"

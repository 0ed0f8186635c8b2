"""InsPro-style propagation with the R-50 MaskDINO segmenter on YouTube-VIS 2019.

Local2Global's phase-2 recipe (``configs/local2global_r50_ytvis19.py``: the whole model fine-tuned from the COCO phase-1
checkpoint on clips mixed with COCO pseudo-videos, same optimiser, schedule, clip length and losses) with
``model.tracker`` swapped for :class:`~local2global.modeling.trackers.inspro.InsProTracker` (T = 18 at inference,
the whole clip in training, linear eps, frame 0 in image mode: 257 tracker parameters at d = 256) and InsPro's box
de-duplication loss added to the criterion. The phase-1 checkpoint's ``tracker.aligner.*`` weights are not used
(and ``tracker.intra_query.*`` start from scratch)::

    python scripts/train_net.py --config-file configs/trackers/inspro_r50_ytvis19.py --num-gpus 4
"""

from ..common.trackers import inspro_extra_terms as _inspro_extra_terms, inspro_tracker as _inspro_tracker  # _names stay out of the loaded config
from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker = _inspro_tracker
model.criterion.extra_terms = _inspro_extra_terms

train.output_dir = "./output/trackers/inspro_r50_ytvis19"

"""InsPro-style propagation with the R-50 MaskDINO segmenter on YouTube-VIS 2019.

Local2Global's phase-2 recipe (``configs/local2global_r50_ytvis19.py``: the whole model fine-tuned from the COCO phase-1
checkpoint on clips mixed with COCO pseudo-videos, same optimiser, schedule, clip length and losses) with
``model.tracker`` swapped for :class:`~local2global.modeling.trackers.inspro.InsProTracker` (T = 18 at inference,
the whole clip in training, linear eps, frame 0 in image mode: 257 tracker parameters at d = 256) and InsPro's box
de-duplication loss added to the criterion. The phase-1 checkpoint's ``tracker.aligner.*`` weights are not used
(and ``tracker.intra_query.*`` start from scratch)::

    python scripts/train_net.py --config-file configs/trackers/inspro_r50_ytvis19.py --num-gpus 4
"""

from detectron2.config import LazyCall as L

from local2global.modeling.criteria import BoxDedupLoss
from local2global.modeling.trackers import InsProTracker

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker = L(InsProTracker)(
    num_queries="${..num_queries}",
    hidden_dim="${..hidden_dim}",
    bank_size=18,
    train_bank_size=None,
    score_hidden=0,
    first_frame="image",
)
model.criterion.extra_terms = [L(BoxDedupLoss)(weight=1.0, beta=0.1, k=5)]

train.output_dir = "./output/trackers/inspro_r50_ytvis19"

"""The peer trackers' nodes, shared by their tiny and R-50 recipes (``configs/trackers/``).

Each recipe assigns one of these to ``model.tracker`` (interpolations such as ``${..hidden_dim}`` resolve against the
model they are assigned to) and then changes what differs (e.g. the tiny DVIS tracker's FFN width).
"""

from detectron2.config import LazyCall as L

from local2global.modeling.criteria import BoxDedupLoss
from local2global.modeling.trackers import DVISTracker, InsProTracker

# InsPro-style propagation: T = 18 at inference, the whole clip in training, linear eps, frame 0 in image mode
inspro_tracker = L(InsProTracker)(
    num_queries="${..num_queries}",
    hidden_dim="${..hidden_dim}",
    bank_size=18,  # the paper's T at inference
    train_bank_size=None,  # training: the whole clip
    score_hidden=0,  # eps = the paper's linear scoring
    first_frame="image",
)
# InsPro's box de-duplication loss (k = 5 unmatched boxes nearest each ground-truth box, beta = 0.1, weight 1)
inspro_extra_terms = [L(BoxDedupLoss)(weight=1.0, beta=0.1, k=5)]

# DVIS's online referring tracker: 6 blocks, 8 heads, FFN 2048, dropout 0
dvis_tracker = L(DVISTracker)(
    num_classes="${..num_classes}",
    num_queries="${..num_queries}",
    hidden_dim="${..hidden_dim}",
    mask_dim="${..hidden_dim}",
    num_layers=6,
    nhead=8,
    dim_feedforward=2048,
    dropout=0.0,
    prealign=True,
    # DVIS: match on the frozen segmenter's predictions while iter < max_iter // 2
    guided_matching_iters="${l2g_iters:${train.max_iter},0.5}",
    query_noise=None,  # DVIS++: "wa" with noise_ratio 0.5
    noise_ratio=0.5,
)

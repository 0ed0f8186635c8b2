"""A tiny Local2Global for CPU tests, the demo and benchmarks (d = 64, 2 encoder + 3 decoder layers).

Same classes and code path as the R-50 model (``local2global_r50.py``), narrower: a bottleneck ResNet with
stage widths 16/32/64/128 (the MaskDINO parity fixture's backbone), hidden width 64, FFN 128, 20 queries, an
aligner of 2 layers, and dense (every-pixel) mask losses, which are cheaper than 12,544 sampled points on a
16×24 mask grid.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from local2global.modeling.segmenter.backbone import make_resnet_stages

from .local2global_r50 import model

model.num_classes = 3
model.num_queries = 20
model.hidden_dim = 64

model.backbone.stem.out_channels = 8
model.backbone.stages = L(make_resnet_stages)(
    stage_channels=(16, 32, 64, 128), num_blocks=(2, 2, 2, 2), stem_channels="${..stem.out_channels}",
    norm="FrozenBN",
)
model.pixel_decoder.input_shape = {
    "res2": L(ShapeSpec)(channels=16, stride=4),
    "res3": L(ShapeSpec)(channels=32, stride=8),
    "res4": L(ShapeSpec)(channels=64, stride=16),
    "res5": L(ShapeSpec)(channels=128, stride=32),
}
model.pixel_decoder.transformer_enc_layers = 2
model.pixel_decoder.transformer_dim_feedforward = 128
model.decoder.dec_layers = 3
model.decoder.dim_feedforward = 128
model.tracker.aligner.num_layers = 2
model.tracker.aligner.dim_feedforward = 128
model.criterion.set_criterion.num_points = None
model.criterion.set_criterion.matcher.num_points = None
model.postprocessor.test_topk = 10

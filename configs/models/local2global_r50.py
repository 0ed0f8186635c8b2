"""Local2Global with a ResNet-50 MaskDINO segmenter (the paper's model). This file only builds ``model``.

Derived values use ``${..}`` interpolation so that command-line overrides reach them
(``model.num_queries=100`` also changes the decoder, the query selector, the aligner's l_pos table and the
criterion). The segmenter's hyper-parameters are detrex MaskDINO R-50's (SPEC §4); its parameter names load
detrex checkpoints (``local2global.modeling.checkpoint``).

The tracker (how the queries of frame t-1 become those of frame t) is ``model.tracker``: here the paper's
Local2Global step; ``configs/trackers/`` swaps in the others. Ablations (paper Tables 3, 5, 6) are overrides:
    model.tracker.aligner=null model.tracker.global_pos=static     propagation only (Table 3; or =refined)
    model.tracker.global_pos=static                                + aligner, no trajectory (Table 3)
    model.tracker.aligner.dim_feedforward=512|2048                 aligner width (Table 5)
    model.tracker.aligner.local_pos=dynamic                        dynamic l_pos (Table 6)
    model.criterion.reduced_supervision=False                      (Table 6)
(``model.aligner...``, ``model.global_pos`` and ``model.first_frame`` are accepted as the old names of these keys.)
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet

from local2global.modeling.criteria.set_criterion import SetCriterion
from local2global.modeling.segmenter.decoder import MaskDINODecoder
from local2global.modeling.criteria.matcher import HungarianMatcher
from local2global.modeling.meta_arch import Local2Global
from local2global.modeling.segmenter.pixel_decoder import MaskDINOEncoder
from local2global.modeling.postprocessing.video_instances import VideoPostprocessor
from local2global.modeling.segmenter.query_selection import TopKQuerySelector
from local2global.modeling.trackers import L2GAligner, Local2GlobalTracker
from local2global.modeling.criteria.video_criterion import VideoSetCriterion

model = L(Local2Global)(
    num_classes=80,
    num_queries=300,
    hidden_dim=256,
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
        freeze_at=1,
    ),
    pixel_decoder=L(MaskDINOEncoder)(
        input_shape={
            "res2": L(ShapeSpec)(channels=256, stride=4),
            "res3": L(ShapeSpec)(channels=512, stride=8),
            "res4": L(ShapeSpec)(channels=1024, stride=16),
            "res5": L(ShapeSpec)(channels=2048, stride=32),
        },
        transformer_dropout=0.0,
        transformer_nheads=8,
        transformer_dim_feedforward=2048,
        transformer_enc_layers=6,
        conv_dim="${..hidden_dim}",
        mask_dim="${..hidden_dim}",
        norm="GN",
        transformer_in_features=["res3", "res4", "res5"],
        common_stride=4,
        num_feature_levels=3,
        total_num_feature_levels=4,
        feature_order="low2high",
    ),
    decoder=L(MaskDINODecoder)(
        in_channels="${..hidden_dim}",
        mask_classification=True,
        num_classes="${..num_classes}",
        hidden_dim="${..hidden_dim}",
        num_queries="${..num_queries}",
        nheads=8,
        dim_feedforward=2048,
        dec_layers=9,
        mask_dim="${..hidden_dim}",
        enforce_input_project=False,
        two_stage=True,
        dn="no",  # denoising queries are for image (COCO) training; off for video training (SPEC §3)
        noise_scale=0.4,
        dn_num=100,
        initialize_box_type="mask2box",
        initial_pred=True,
        learn_tgt=False,
        total_num_feature_levels=4,
        dropout=0.0,
        activation="relu",
        nhead=8,
        dec_n_points=4,
        return_intermediate_dec=True,
        query_dim=4,
        dec_layer_share=False,
        semantic_ce_loss=False,
    ),
    query_selector=L(TopKQuerySelector)(num_queries="${..num_queries}"),
    tracker=L(Local2GlobalTracker)(
        aligner=L(L2GAligner)(
            d_model="${...hidden_dim}",
            nhead=8,
            num_layers=3,
            dim_feedforward=1024,
            dropout=0.0,
            num_local_queries="${...num_queries}",
            local_pos="static",
        ),
        num_queries="${..num_queries}",
        hidden_dim="${..hidden_dim}",
        first_frame="image",
        global_pos="trajectory",
    ),
    criterion=L(VideoSetCriterion)(
        set_criterion=L(SetCriterion)(
            num_classes="${...num_classes}",
            matcher=L(HungarianMatcher)(
                cost_class=4.0, cost_mask=5.0, cost_dice=5.0, cost_box=5.0, cost_giou=2.0, num_points=12544,
            ),
            eos_coef=0.1,
            losses=["labels", "masks", "boxes"],
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            dn="no",
            class_weight=4.0,
            mask_weight=5.0,
            dice_weight=5.0,
            box_weight=5.0,
            giou_weight=2.0,
            dec_layers="${...decoder.dec_layers}",
        ),
        reduced_supervision=True,
        absent_as_no_object=False,
        interm_loss=True,
        box_loss=True,
        deep_supervision=True,  # every decoder layer supervised (MaskDINO); False + the two above = Eq. 4
    ),
    postprocessor=L(VideoPostprocessor)(test_topk=10, frame_score_threshold=0.5),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    size_divisibility=32,
)

"""COCO panoptic as (pseudo-)videos: every segment a target (things one by one, stuff merged per class), the VPS
counterpart of ``coco_pseudo.py``.

``dataloader.train`` is the VPS phase-1 loader: detectron2's builtin ``coco_2017_train_panoptic`` ("standard" COCO
panoptic: ``datasets/coco/{train2017, panoptic_train2017, annotations/panoptic_train2017.json}``; 133 contiguous
classes, 80 things then 53 stuff, the order of MaskDINO's COCO-panoptic head) through
``CocoPanopticPseudoVideoMapper``: one image warped into ``num_frames`` frames by a smooth random camera motion,
``gt_is_thing`` per target. Phase 1 uses 1-frame clips (``first_frame="learned"``), as the instance phase 1 does; a
video recipe can mix T-frame panoptic pseudo-videos in through ``build_video_train_loader``'s ``pseudo_dataset`` /
``pseudo_mapper`` / ``pseudo_ratio`` once the classes are mapped to its vocabulary (``category_map``). No evaluator:
phase 1 has no test loader.
"""

from detectron2.config import LazyCall as L
from detectron2.data import get_detection_dataset_dicts
from detectron2.data import transforms as T
from omegaconf import OmegaConf

from local2global.data import CocoPanopticPseudoVideoMapper, build_video_train_loader

dataloader = OmegaConf.create()

dataloader.train = L(build_video_train_loader)(
    # panoptic dicts have no "annotations": detectron2's empty-image filter does not apply to them
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train_panoptic", filter_empty=False),
    mapper=L(CocoPanopticPseudoVideoMapper)(
        num_frames=1,
        category_map=None,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
                max_size=1333,
                sample_style="choice",
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
    ),
    total_batch_size=16,
    num_workers=4,
)

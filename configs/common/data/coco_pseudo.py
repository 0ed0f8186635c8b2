"""COCO as (pseudo-)videos.

``dataloader.train`` alone is the phase-1 loader: COCO train images (80 COCO classes, detectron2's contiguous
ids) as 1-frame clips for the aligner pre-training (``first_frame="learned"``). Video recipes mix COCO pseudo-videos
into their video loader through ``build_video_train_loader``'s ``pseudo_dataset`` / ``pseudo_mapper`` /
``pseudo_ratio`` (see ``configs/local2global_r50_ytvis19.py``), with the COCO classes mapped to the target
vocabulary (``category_map="ytvis_2019"`` etc.). COCO is read from ``datasets/coco`` (detectron2's builtin
``coco_2017_train``). No COCO evaluator: the model is a video model; phase 1 has no test loader.
"""

from detectron2.config import LazyCall as L
from detectron2.data import get_detection_dataset_dicts
from detectron2.data import transforms as T
from omegaconf import OmegaConf

from local2global.data import CocoPseudoVideoMapper, build_video_train_loader

dataloader = OmegaConf.create()

dataloader.train = L(build_video_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=True),
    mapper=L(CocoPseudoVideoMapper)(
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

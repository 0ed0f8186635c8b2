"""The built-in synthetic YouTube-VIS dataset (``local2global.data.synthetic``): 64x96 frames, 3 classes, crossings,
occlusions, entries and exits. It is generated on first use (the registered loaders of ``synthetic_vis_{train,valid}``
call ``ensure_synthetic_vis``) under ``$L2G_SYNTHETIC_ROOT`` or ``<$DETECTRON2_DATASETS or datasets>/synthetic_vis``.
"""

from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from omegaconf import OmegaConf

from local2global.data import (
    VideoClipDatasetMapper,
    VideoTestDatasetMapper,
    build_video_test_loader,
    build_video_train_loader,
    get_video_dicts,
)
from local2global.evaluation import YTVISEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_video_train_loader)(
    dataset=L(get_video_dicts)(names="synthetic_vis_train"),
    mapper=L(VideoClipDatasetMapper)(
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(56, 64, 72), max_size=128, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True),
        ],
        num_frames=4,
        sampling_frame_range=3,
        image_format="RGB",
    ),
    total_batch_size=4,
    num_workers=0,
)

dataloader.test = L(build_video_test_loader)(
    dataset=L(get_video_dicts)(names="synthetic_vis_valid"),
    mapper=L(VideoTestDatasetMapper)(
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=64, max_size=128)],
    ),
    num_workers=0,
)

dataloader.evaluator = L(YTVISEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/inference",
    distributed=True,
)

"""YouTube-VIS 2019: training clips (short side 360-480, horizontal flip, 4 frames), whole-video test at 360,
and the YouTube-VIS evaluator (``datasets/ytvis_2019/{train,valid}.json``, see ``local2global.data.ytvis``).

The validation split has no public annotations: the evaluator then writes ``results.zip`` for the server into
``<train.output_dir>/inference``.
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
    dataset=L(get_video_dicts)(names="ytvis_2019_train"),
    mapper=L(VideoClipDatasetMapper)(
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(360, 384, 408, 432, 456, 480), max_size=768, sample_style="choice"
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        num_frames=4,
        sampling_frame_range=5,
        image_format="RGB",
    ),
    total_batch_size=8,
    num_workers=4,
)

dataloader.test = L(build_video_test_loader)(
    dataset=L(get_video_dicts)(names="ytvis_2019_val"),
    mapper=L(VideoTestDatasetMapper)(
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=360, max_size=640)],
    ),
    num_workers=2,
)

dataloader.evaluator = L(YTVISEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/inference",
)

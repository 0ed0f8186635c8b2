"""VIPSeg (720p layout, ``datasets/VIPSeg/VIPSeg_720P``; see ``local2global.data.vipseg``): panoptic training clips
(every segment one target, ``VideoPanopticClipMapper``), whole-video test, and the VPQ / STQ evaluator.

Sizes are the project's YouTube-VIS ones (train: short side 360-480, max 768, horizontal flip, 4-frame clips from a
window of +-5 frames; test: short side 360) because the paper gives none for VIPSeg; the predictions are upsampled
to the ground truth's 720p before merging, so the evaluator always scores at the official resolution.
"""

from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from omegaconf import OmegaConf

from local2global.data import VideoTestDatasetMapper, build_video_test_loader, build_video_train_loader, get_video_dicts
from local2global.data.vps_mapper import VideoPanopticClipMapper
from local2global.evaluation.vps import VPSEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_video_train_loader)(
    dataset=L(get_video_dicts)(names="vipseg_train"),
    mapper=L(VideoPanopticClipMapper)(
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
    dataset=L(get_video_dicts)(names="vipseg_val"),
    mapper=L(VideoTestDatasetMapper)(
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=360, max_size=640)],
    ),
    num_workers=2,
)

dataloader.evaluator = L(VPSEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/inference",
)

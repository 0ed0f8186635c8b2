"""Video data: YouTube-VIS / OVIS datasets, clip and test mappers, COCO pseudo-videos, synthetic data, loaders.

Importing this package registers the built-in datasets with detectron2 (``ytvis_2019_{train,val}``,
``ytvis_2021_{train,val}``, ``ytvis_2022_val``, ``ovis_{train,val}``, ``synthetic_vis_{train,valid}``; see
:mod:`local2global.data.ytvis`; the VIPSeg panoptic ``vipseg_{train,val}``, ``vipseg_raw_{train,val}``; see
:mod:`local2global.data.vipseg`; the synthetic VIPSeg-format ``synthetic_vps_{train,valid}``,
``synthetic_vps_raw_{train,valid}``; see :mod:`local2global.data.synthetic_vps`). The model package never imports
this one.
"""

from local2global.data.build import (
    MixedSourceSampler,
    build_video_test_loader,
    build_video_train_loader,
    filter_images_by_category,
    get_video_dicts,
)
from local2global.data.categories import (
    COCO_TO_OVIS,
    COCO_TO_YTVIS_2019,
    COCO_TO_YTVIS_2021,
    OVIS_CATEGORIES,
    SYNTHETIC_VIS_CATEGORIES,
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    YTVIS_2022_CATEGORIES,
    coco_category_map,
    get_categories,
    thing_classes,
    thing_dataset_id_to_contiguous_id,
    vis_metadata,
)
from local2global.data.clip_mapper import (
    FrameReadError,
    LazyVideoFrames,
    VideoClipDatasetMapper,
    VideoTestDatasetMapper,
    sample_frame_indices,
)
from local2global.data.coco_panoptic_pseudo_video import CocoPanopticPseudoVideoMapper
from local2global.data.coco_pseudo_video import CocoPseudoVideoMapper
from local2global.data.synthetic import SyntheticVISConfig, ensure_synthetic_vis, make_synthetic_vis
from local2global.data.synthetic_vps import (
    SYNTHETIC_VPS_CATEGORIES,
    SyntheticVPSConfig,
    ensure_synthetic_vps,
    make_synthetic_vps,
    register_synthetic_vps,
)
from local2global.data.vipseg import (
    VIPSegFormatError,
    load_vipseg_panoptic_json,
    load_vipseg_raw,
    read_panoptic_frame,
    register_all_vipseg,
)
from local2global.data.vipseg_categories import VIPSEG_CATEGORIES, vipseg_metadata
from local2global.data.vps_mapper import VideoPanopticClipMapper
from local2global.data.ytvis import (
    YTVISFormatError,
    load_ytvis_json,
    register_all_builtin,
    register_ytvis_instances,
)

__all__ = [
    "MixedSourceSampler", "build_video_test_loader", "build_video_train_loader", "get_video_dicts",
    "filter_images_by_category",
    "COCO_TO_OVIS", "COCO_TO_YTVIS_2019", "COCO_TO_YTVIS_2021", "OVIS_CATEGORIES", "SYNTHETIC_VIS_CATEGORIES",
    "YTVIS_2019_CATEGORIES", "YTVIS_2021_CATEGORIES", "YTVIS_2022_CATEGORIES", "coco_category_map",
    "get_categories", "thing_classes", "thing_dataset_id_to_contiguous_id", "vis_metadata",
    "FrameReadError", "LazyVideoFrames", "VideoClipDatasetMapper", "VideoTestDatasetMapper", "sample_frame_indices",
    "CocoPseudoVideoMapper", "CocoPanopticPseudoVideoMapper",
    "SyntheticVISConfig", "ensure_synthetic_vis", "make_synthetic_vis",
    "SYNTHETIC_VPS_CATEGORIES", "SyntheticVPSConfig", "ensure_synthetic_vps", "make_synthetic_vps",
    "register_synthetic_vps",
    "YTVISFormatError", "load_ytvis_json", "register_all_builtin", "register_ytvis_instances",
    "VIPSegFormatError", "load_vipseg_panoptic_json", "load_vipseg_raw", "read_panoptic_frame", "register_all_vipseg",
    "VIPSEG_CATEGORIES", "vipseg_metadata", "VideoPanopticClipMapper",
]

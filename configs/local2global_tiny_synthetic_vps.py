"""The tiny VPS recipe on the built-in synthetic video panoptic dataset: what ``run_demo.py --task vps`` trains on a CPU.

The data are ``synthetic_vps_{train,valid}`` (``local2global.data.synthetic_vps``: VIPSeg's on-disk format, 4 stuff
classes and the 3 synthetic VIS shapes as things, 64x96 frames; generated on first use under
``$L2G_SYNTHETIC_VPS_ROOT`` or ``<$DETECTRON2_DATASETS or datasets>/synthetic_vps``), scored with VPQ / STQ
(``VPSEvaluator``). The recipe is ``local2global_tiny_vipseg.py`` (the tiny model in panoptic mode: every segment one
target, stuff merged per class, the panoptic post-processor) with the synthetic classes and, for training from
scratch on 2 CPU cores, the model and optimiser changes that ``local2global_tiny_demo.py`` measured for the VIS demo
(measurements in ``docs/EXPERIMENTS.md``): batch norm and no frozen stem, a 16-channel stem with bottleneck blocks of the
stage width, 4 encoder heads of width 16, 2 decoder layers, MaskDINO's denoising queries on the image-mode frame,
AdamW 1e-3, batch 8, the frames upsampled x2 (short side 128; masks are scored at the original 64x96).

    python scripts/run_demo.py --task vps             # warm-up on single frames, clip training, VPQ / STQ
    python scripts/train_net.py --config-file configs/local2global_tiny_synthetic_vps.py train.max_iter=50
"""

from detectron2.config import LazyCall as L
from detectron2.data import transforms as T

from local2global.data.synthetic_vps import SYNTHETIC_VPS_CATEGORIES
from local2global.modeling.postprocessing.video_panoptic import PanopticVideoPostprocessor

from .local2global_tiny_vipseg import dataloader, lr_multiplier, model, optimizer, train

model.num_classes = len(SYNTHETIC_VPS_CATEGORIES)
model.postprocessor = L(PanopticVideoPostprocessor)(
    thing_classes=[c["id"] for c in SYNTHETIC_VPS_CATEGORIES if c["isthing"]],
)

# the VIS demo's model for training from scratch (configs/local2global_tiny_demo.py)
model.backbone.stem.norm = "BN"
model.backbone.stages.norm = "BN"
model.backbone.freeze_at = 0
model.backbone.stem.out_channels = 16
model.backbone.stages.bottleneck_ratio = 1
model.pixel_decoder.transformer_nheads = 4
model.decoder.dec_layers = 2
model.decoder.dn = "seg"
model.decoder.dn_num = 20
model.criterion.set_criterion.dn = "seg"

dataloader.train.dataset.names = "synthetic_vps_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(128,), max_size=256, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.num_frames = 5
dataloader.train.mapper.sampling_frame_range = 5
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "synthetic_vps_valid"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=128, max_size=256)]
dataloader.test.num_workers = 0

optimizer.lr = 1e-3
lr_multiplier.scheduler.milestones = [0.8]

train.max_iter = 2000
train.log_period = 20
train.checkpointer.period = 500
train.checkpointer.max_to_keep = 2
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 1.0
train.output_dir = "./output/local2global_tiny_synthetic_vps"

"""The ``make demo`` recipe: the tiny Local2Global trained from scratch on the synthetic dataset on a CPU.

The paper's recipes fine-tune a COCO-pretrained MaskDINO; here nothing is pretrained, so the demo changes what
training from scratch on 2 CPU cores needs and nothing else (losses, data and evaluation are those of
``local2global_tiny_synthetic.py``): batch norm and no frozen stem; a 16-channel stem with bottleneck blocks of the
stage width; the 64x96 frames upsampled x2 for the network (one training scale, short side 128; masks are scored
at 64x96); 4 encoder heads of width 16 instead of 8 of width 8; 2 decoder layers instead of 3; MaskDINO's denoising
queries (20) on the image-mode frame; AdamW 1e-3; batch 8. The measurements behind each change are in
``docs/EXPERIMENTS.md``.

``scripts/run_demo.py`` trains it in two stages: a warm-up on single frames (``dataloader.train.mapper.num_frames=1``,
MaskDINO's image mode, constant lr), then 5-frame clips from that checkpoint with the aligner, trajectory and reduced
supervision::

    python scripts/run_demo.py --output output/demo          # what `make demo` runs
"""

from .local2global_tiny_synthetic import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.stem.norm = "BN"
model.backbone.stages.norm = "BN"
model.backbone.freeze_at = 0
model.backbone.stem.out_channels = 16  # the stages' stem_channels follows by interpolation
model.backbone.stages.bottleneck_ratio = 1

model.pixel_decoder.transformer_nheads = 4
model.decoder.dec_layers = 2  # the criterion's dec_layers follows by interpolation

model.decoder.dn = "seg"
model.decoder.dn_num = 20
model.criterion.set_criterion.dn = "seg"

optimizer.lr = 1e-3

# batch 8 (4 in the tiny synthetic config): faster per second of training on 2 cores (docs/EXPERIMENTS.md)
dataloader.train.total_batch_size = 8

# one training scale, a multiple of the size divisibility (32), so no frame is padded
dataloader.train.mapper.augmentations[0].short_edge_length = (128,)
dataloader.train.mapper.augmentations[0].max_size = 256
dataloader.test.mapper.augmentations[0].short_edge_length = 128
dataloader.test.mapper.augmentations[0].max_size = 256

train.output_dir = "./output/demo/train"

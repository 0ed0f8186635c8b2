"""MinVIS on the tiny synthetic recipe: the image-mode segmenter per frame, slots linked by Hungarian matching.

Training-free (``train.eval_only = True``): it evaluates a segmenter checkpoint, e.g. the image-mode warm-up of
``make demo`` or the tracking benchmark's shared segmenter::

    python scripts/train_net.py --config-file configs/trackers/minvis_tiny_synthetic.py \\
        train.init_checkpoint=output/demo/warmup/model_final.pth

``model.tracker.similarity=mask_iou`` links by mask IoU instead (the per-frame + IoU-linking lower bound). MinVIS's
own training is the segmenter's image-mode training: ``train.eval_only=False`` trains this config on 1-frame clips.
"""

from detectron2.config import LazyCall as L

from local2global.modeling.trackers import MinVISTracker

from ..local2global_tiny_synthetic import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.tracker = L(MinVISTracker)(similarity="embedding")
# image-mode training of the segmenter (MinVIS trains an image segmenter): one frame per clip, nothing to skip
dataloader.train.mapper.num_frames = 1
model.criterion.reduced_supervision = False

train.eval_only = True
train.output_dir = "./output/trackers/minvis_tiny_synthetic"

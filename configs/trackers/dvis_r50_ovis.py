"""Stage 2 of the DVIS recipe on OVIS: as ``dvis_r50_ytvis19.py`` (frozen segmenter, referring tracker, 5-frame
clips, AdamW 1e-4, guided matching in the first half) on OVIS alone, 20k iterations with x0.1 at 14k (70%), 25
classes, test top-k 20 (DVIS's ``configs/ovis/DVIS_Online_R50.yaml``), from stage 1 ``segmenter_r50_ovis_image.py``::

    python scripts/train_net.py --config-file configs/trackers/segmenter_r50_ovis_image.py --num-gpus 8
    python scripts/train_net.py --config-file configs/trackers/dvis_r50_ovis.py --num-gpus 8
"""

from .dvis_r50_ytvis19 import lr_multiplier, model, optimizer, train
from .segmenter_r50_ovis_image import dataloader

model.num_classes = 25
model.postprocessor.test_topk = 20

dataloader.train.mapper.num_frames = 5
dataloader.train.mapper.sampling_frame_range = 2

train.max_iter = 20000
train.init_checkpoint = "./output/trackers/segmenter_r50_ovis_image/model_final.pth"
train.output_dir = "./output/trackers/dvis_r50_ovis"

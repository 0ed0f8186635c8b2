"""Stage 2 of the DVIS recipe on YouTube-VIS 2021: as ``dvis_r50_ytvis19.py`` (frozen segmenter, referring tracker,
5-frame clips, AdamW 1e-4, 40k iterations, x0.1 at 70%, guided matching in the first half) on YouTube-VIS 2021 mixed
with COCO pseudo-videos 1 : 1, from stage 1 ``segmenter_r50_ytvis21_image.py``::

    python scripts/train_net.py --config-file configs/trackers/segmenter_r50_ytvis21_image.py --num-gpus 8
    python scripts/train_net.py --config-file configs/trackers/dvis_r50_ytvis21.py --num-gpus 8
"""

from .dvis_r50_ytvis19 import lr_multiplier, model, optimizer, train
from .segmenter_r50_ytvis21_image import dataloader

dataloader.train.mapper.num_frames = 5
dataloader.train.mapper.sampling_frame_range = 2

train.max_iter = 40000
train.init_checkpoint = "./output/trackers/segmenter_r50_ytvis21_image/model_final.pth"
train.output_dir = "./output/trackers/dvis_r50_ytvis21"

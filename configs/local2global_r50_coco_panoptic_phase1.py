"""Phase 1 for video panoptic segmentation: the COCO pre-training of the L2G-aligner (paper §4.2), on a MaskDINO R-50
**COCO-panoptic** segmenter (133 classes: 80 things, 53 stuff), so that phase 2 on VIPSeg starts from a segmenter that
already segments stuff.

Everything is as in ``local2global_r50_coco_phase1.py`` (frozen segmenter; trainable: the aligner, the learnable
first-frame global embedding, the static l_pos table and the decoder's positional MLP; 1-frame COCO clips, 60k
iterations) except the class head (133 classes), the checkpoint and the data: COCO **panoptic**
(``configs/common/data/coco_panoptic_pseudo.py``: detectron2's ``coco_2017_train_panoptic`` through
``CocoPanopticPseudoVideoMapper``), so every segment is a target, things one by one and stuff merged per class with
``gt_is_thing`` (the criterion's panoptic mode), as in the VIPSeg phase. Its 133 contiguous classes are detectron2's
``COCO_CATEGORIES`` order (80 things, then 53 stuff), the order of the checkpoint's class head.

    python scripts/train_net.py --config-file configs/local2global_r50_coco_panoptic_phase1.py --num-gpus 4 \
        train.init_checkpoint=weights/maskdino_r50_50ep_300q_hid2048_3sd1_panoptic_pq53.0.pth

The checkpoint is detrex's MaskDINO R-50 COCO-panoptic model (PQ 53.0), released at
https://github.com/IDEA-Research/detrex-storage/releases/download/maskdino-v0.1.0/maskdino_r50_50ep_300q_hid2048_3sd1_panoptic_pq53.0.pth
(its ``sem_seg_head.*`` keys load through ``local2global.modeling.checkpoint``, as the instance model's).
The output (``output/local2global_r50_coco_panoptic_phase1/model_final.pth``) initialises
``configs/local2global_r50_vipseg.py``.
"""

from .common.data.coco_panoptic_pseudo import dataloader
from .local2global_r50_coco_phase1 import lr_multiplier, model, optimizer, train

#: COCO-panoptic: 80 things + 53 stuff (detectron2's COCO_CATEGORIES).
COCO_PANOPTIC_NUM_CLASSES = 133

model.num_classes = COCO_PANOPTIC_NUM_CLASSES
train.init_checkpoint = "weights/maskdino_r50_50ep_300q_hid2048_3sd1_panoptic_pq53.0.pth"
train.output_dir = "./output/local2global_r50_coco_panoptic_phase1"
dataloader.train.total_batch_size = 16  # as the instance phase 1

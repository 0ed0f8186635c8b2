"""Phase 1: COCO pre-training of the L2G-aligner (paper §4.2), 60k iterations from a MaskDINO R-50 COCO checkpoint.

Everything is frozen except the aligner, the learnable first-frame global embedding (``tracker.global_query_embed``),
the static l_pos table (``tracker.aligner.local_pos_embed``) and the decoder's positional MLP (``ref_point_head``, the
paper's "dynamic positional embedding for the segmentation decoder"). COCO images are 1-frame clips
(``first_frame="learned"``: the global queries of frame 0 are the learnable embedding, aligned with the image's
local queries); 80 COCO classes, as the frozen heads of the checkpoint.

    python scripts/train_net.py --config-file configs/local2global_r50_coco_phase1.py --num-gpus 4 \
        train.init_checkpoint=weights/maskdino_r50_50ep_300q_hid2048_3sd1_instance_maskenhanced_mask46.3ap_box51.7ap.pth

The checkpoint is detrex's MaskDINO R-50 COCO instance model with the 2048-wide decoder FFN (SPEC §4), released at
https://github.com/IDEA-Research/detrex-storage/releases/download/maskdino-v0.1.0/maskdino_r50_50ep_300q_hid2048_3sd1_instance_maskenhanced_mask46.3ap_box51.7ap.pth
(its sem_seg_head.* keys are mapped on load by local2global.modeling.checkpoint).

The output (``output/local2global_r50_coco_phase1/model_final.pth``) initialises the video recipes.
"""

from .common.data.coco_pseudo import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.local2global_r50 import model

model.num_classes = 80
model.tracker.first_frame = "learned"
model.criterion.reduced_supervision = False  # one-frame clips: nothing to skip

train.trainable_params = [
    "tracker.aligner.*",  # the aligner layers and its static l_pos table (tracker.aligner.local_pos_embed)
    "tracker.global_query_embed.*",
    "decoder.decoder.ref_point_head.*",
]
train.max_iter = 60000
train.init_checkpoint = "weights/maskdino_r50_50ep_300q_hid2048_3sd1_instance_maskenhanced_mask46.3ap_box51.7ap.pth"
train.output_dir = "./output/local2global_r50_coco_phase1"
train.eval_period = 0  # no video evaluation for the image pre-training
train.checkpointer.period = 5000

optimizer.lr = 1e-4  # MaskDINO's COCO setting ("default settings"), for the trainable parts only
dataloader.train.total_batch_size = 16

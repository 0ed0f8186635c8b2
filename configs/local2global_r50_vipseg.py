"""Phase 2 on VIPSeg (video panoptic segmentation; the paper's Table 4: 46.3 VPQ, 45.3 STQ with R-50).

Phases:

1. ``configs/local2global_r50_coco_panoptic_phase1.py``: the aligner pre-trained on COCO on the frozen MaskDINO R-50
   COCO-panoptic segmenter (133 classes).
2. this file: the whole network on VIPSeg training clips, from the phase-1 output. The 133-class head does not fit
   VIPSeg's 124 classes: the class-dimension parameters (decoder and encoder class heads, the denoising label
   embedding, ``criterion.empty_weight``) are loaded around by the checkpointer (a warning lists them) and start from
   their initialisation; everything else comes from phase 1.

Schedule: the paper's video training (§4.2 lists VIPSeg [34] among the video datasets trained "in an online
fashion"): 4-frame clips, AdamW 5e-5 (backbone x0.1), 120k iterations with x0.1 at 60k, batch 8 (4 V100), gradient
clip 0.01, as the YouTube-VIS / OVIS recipes. The paper does not say whether COCO pseudo-videos were mixed in for
VIPSeg; they are not here (a COCO-panoptic -> VIPSeg class map does not exist in the project yet). DVIS's VIPSeg
schedule (20k / 14k iterations) trains only its tracker on a frozen VIPSeg-fine-tuned segmenter, so it is a
reference, not this recipe.

Model: the R-50 Local2Global with 124 classes (58 things, 66 stuff) in the class head; the criterion sees the clips'
``is_thing`` flags (no box loss / box cost for stuff, MaskDINO's panoptic training); the post-processor merges each
frame into a panoptic map with MaskDINO's panoptic settings (thing ids = slots, stable over the video; stuff
merged per class). Evaluation: VPQ / STQ equal to the official scripts (``VPSEvaluator``, ``docs/VPS.md``).

    python scripts/train_net.py --config-file configs/local2global_r50_vipseg.py --num-gpus 4
"""

from detectron2.config import LazyCall as L

from local2global.data.vipseg_categories import VIPSEG_NUM_CLASSES, vipseg_metadata
from local2global.modeling.postprocessing.video_panoptic import PanopticVideoPostprocessor

from .common.data.vipseg import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.local2global_r50 import model

model.num_classes = VIPSEG_NUM_CLASSES
model.postprocessor = L(PanopticVideoPostprocessor)(
    thing_classes=sorted(vipseg_metadata()["thing_dataset_id_to_contiguous_id"].values()),
    object_mask_threshold=0.25,
    overlap_threshold=0.8,
    pano_temp=0.06,
    transform_eval=True,
)

optimizer.lr = 5e-5
lr_multiplier.scheduler.milestones = [0.5]

train.max_iter = 120000
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.01
train.clip_grad.params.norm_type = 2
train.init_checkpoint = "./output/local2global_r50_coco_panoptic_phase1/model_final.pth"
train.output_dir = "./output/local2global_r50_vipseg"
train.eval_period = 0  # VPQ / STQ on vipseg_val at the end (its annotations are public)
train.checkpointer.period = 10000

"""The OVIS recipe (`local2global_r50_ovis.py`) on the local validation split: trained on `ovis_train_sub`,
evaluated on `ovis_val_sub` (about 109 of the 607 training videos, held out by
`local2global.data.local_split`'s rule), whose annotations are public, so `train.eval_period` scores it during
training and `--eval-only` prints AP without a server submission.

    python scripts/train_net.py --config-file configs/local2global_r50_ovis_localval.py --num-gpus 8 \
        train.init_checkpoint=output/local2global_r50_coco_phase1/model_final.pth
"""

from .local2global_r50_ovis import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.dataset.names = "ovis_train_sub"
dataloader.test.dataset.names = "ovis_val_sub"  # the evaluator follows (${..test.dataset.names})

train.output_dir = "./output/local2global_r50_ovis_localval"
train.eval_period = 20000  # 6 evaluations in the 120k iterations, the last one at the end

"""The YouTube-VIS 2019 recipe (`local2global_r50_ytvis19.py`) on the local validation split: trained on `ytvis_2019_train_sub`,
evaluated on `ytvis_2019_val_sub` (about 403 of the 2,238 training videos, held out by
`local2global.data.local_split`'s rule), whose annotations are public, so `train.eval_period` scores it during
training and `--eval-only` prints AP without a server submission.

    python scripts/train_net.py --config-file configs/local2global_r50_ytvis19_localval.py --num-gpus 8 \
        train.init_checkpoint=output/local2global_r50_coco_phase1/model_final.pth
"""

from .local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.dataset.names = "ytvis_2019_train_sub"
dataloader.test.dataset.names = "ytvis_2019_val_sub"  # the evaluator follows (${..test.dataset.names})

train.output_dir = "./output/local2global_r50_ytvis19_localval"
train.eval_period = 20000  # 6 evaluations in the 120k iterations, the last one at the end

"""The tiny Local2Global on the built-in synthetic dataset: a CPU recipe (tests, benchmarks, ``make demo``).

* the dataset is generated on first use (``configs/common/data/synthetic.py``);
* ``train.device`` is ``"${l2g_device:}"``: resolved when read to ``"cuda"`` if the machine has a GPU, else
  ``"cpu"`` (so detectron2's own ``tools/lazyconfig_train_net.py`` runs it on a CPU too); ``train.device=cpu``
  overrides it;
* the model is ``configs/models/local2global_tiny.py`` with ``num_classes`` = the synthetic data's classes.

    python scripts/train_net.py --config-file configs/local2global_tiny_synthetic.py train.max_iter=50
"""

import local2global.engine.device  # noqa: F401  (registers the ${l2g_device:} resolver)
from local2global.data.categories import SYNTHETIC_VIS_CATEGORIES

from .common.data.synthetic import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.local2global_tiny import model

model.num_classes = len(SYNTHETIC_VIS_CATEGORIES)
model.postprocessor.test_topk = 10

optimizer.lr = 2e-4
optimizer.weight_decay = 0.05
optimizer.params.lr_factor_func.factor = 1.0  # trained from scratch: no reason to slow the backbone down
lr_multiplier.scheduler.milestones = [0.8]
lr_multiplier.warmup_length = 0.02

train.device = "${l2g_device:}"
train.ddp.device_ids = None  # CPU DDP under detectron2's tool needs no device ids; valid on one GPU per process too
train.max_iter = 2000
train.eval_period = 0
train.log_period = 20
train.checkpointer.period = 500
train.checkpointer.max_to_keep = 2
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 1.0
train.seed = 0
train.output_dir = "./output/local2global_tiny_synthetic"
train.init_checkpoint = ""

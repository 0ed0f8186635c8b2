"""Phase 2 on YouTube-VIS 2021: the shared phase-2 recipe (``common/vis_phase2.py``) on its own 40 categories.

The same model is evaluated on YouTube-VIS 2022 with ``configs/local2global_r50_ytvis22.py`` or, equivalently,
    python scripts/train_net.py --config-file configs/local2global_r50_ytvis21.py --eval-only \
        dataloader.test.dataset.names=ytvis_2022_val train.init_checkpoint=output/local2global_r50_ytvis21/model_final.pth
"""

from .common.data.ytvis_2021 import dataloader as _ytvis21
from .common.vis_phase2 import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.dataset.names = _ytvis21.train.dataset.names
dataloader.test.dataset.names = _ytvis21.test.dataset.names
dataloader.train.pseudo_mapper.category_map = "ytvis_2021"

train.output_dir = "./output/local2global_r50_ytvis21"

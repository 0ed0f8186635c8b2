#!/usr/bin/env python
"""Train or evaluate a Local2Global LazyConfig: the file form of ``l2g-train`` (the logic lives in
:mod:`local2global.engine.launch`; see its docstring for the command line).

    python scripts/train_net.py --config-file configs/local2global_tiny_synthetic.py train.max_iter=100
    python scripts/train_net.py --config-file configs/local2global_r50_ytvis19.py --num-gpus 8
    python scripts/train_net.py --config-file ... --eval-only train.init_checkpoint=output/model_final.pth
"""

import sys

try:
    from local2global.engine.launch import run
except ImportError as e:  # the package (or detectron2, whose message says how to install it) is missing
    if e.name == "detectron2":
        sys.exit(f"train_net.py: error: {e}")
    if not (e.name or "").startswith("local2global"):
        raise
    sys.exit(f"train_net.py: error: the local2global package is not installed ({e}); run `make install` "
             "(or `pip install -e .` in an environment that has torch and detectron2)")

if __name__ == "__main__":
    run()

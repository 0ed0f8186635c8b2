#!/usr/bin/env python
"""Online inference on a folder of frames or a video file, rendered: the file form of ``l2g-demo`` (the logic lives
in :mod:`local2global.inference.demo`; see its docstring).

    python scripts/demo.py --config-file configs/local2global_tiny_synthetic.py \
        --input path/to/frames_or_video.mp4 --output output/demo_video \
        train.init_checkpoint=output/demo/model_final.pth
"""

import sys

try:
    from local2global.inference.demo import main_cli
except ImportError as e:  # the package (or detectron2, whose message says how to install it) is missing
    if e.name == "detectron2":
        sys.exit(f"demo.py: error: {e}")
    if not (e.name or "").startswith("local2global"):
        raise
    sys.exit(f"demo.py: error: the local2global package is not installed ({e}); run `make install` "
             "(or `pip install -e .` in an environment that has torch and detectron2)")

if __name__ == "__main__":
    sys.exit(main_cli())

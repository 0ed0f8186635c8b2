#!/usr/bin/env python
"""Write the local validation split of the official YouTube-VIS 2019 / 2021 and OVIS training JSONs: the file form
of ``l2g-make-local-split`` (the rule and the logic live in :mod:`local2global.data.local_split`).

    python scripts/make_local_split.py                        # every official training JSON under datasets/
    python scripts/make_local_split.py --json datasets/ytvis_2019/train.json --prefix ytvis_2019 --write-json

Writes ``<prefix>_{train,val}_sub_ids.txt`` (one video id per line) and ``<prefix>_local_split.json`` into
``local_split/`` beside each JSON (``--output`` elsewhere). The registered ``*_train_sub`` / ``*_val_sub`` datasets
apply the same rule by themselves: these files are for other tools.
"""

import sys

try:
    from local2global.data.local_split import main
except ImportError as e:  # the package (or detectron2, whose message says how to install it) is missing
    if e.name == "detectron2":
        sys.exit(f"make_local_split.py: error: {e}")
    if not (e.name or "").startswith("local2global"):
        raise
    sys.exit(f"make_local_split.py: error: the local2global package is not installed ({e}); run `make install` "
             "(or `pip install -e .` in an environment that has torch and detectron2)")

if __name__ == "__main__":
    sys.exit(main())

"""Local2Global: local-to-global query alignment for online video instance segmentation.

The package is imported as ``local2global`` (its files live in ``projects/local2global``, mapped by
``pyproject.toml``). Sub-packages:

* :mod:`local2global.modeling`   -- the segmenter (MaskDINO-compatible), the L2G aligner, criterion, matcher.
* :mod:`local2global.data`       -- YouTube-VIS / OVIS datasets, mappers, synthetic data, COCO pseudo-videos.
* :mod:`local2global.evaluation` -- the YouTube-VIS evaluator.
* :mod:`local2global.inference`  -- streaming (online) video inference.
"""

import importlib.util

__version__ = "0.1.0"

#: How to install detectron2, which is not on PyPI under its own name (so it is not in pyproject's dependencies).
DETECTRON2_INSTALL_HINT = (
    "local2global needs detectron2, which is not on PyPI under its own name and is therefore not installed by "
    "`pip install local2global`. Install it from the official source with "
    "`pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'` (needs torch "
    "first), or use the project's installer, `bash scripts/install.sh` (`make install`), which creates .venv with "
    "the PyPI republish sal-detectron2==0.7.2, re-tagged for any Python 3 and installed with --no-deps."
)


def _require_detectron2() -> None:
    """Raise an ``ImportError`` that says how to install detectron2 when it is not importable."""
    if importlib.util.find_spec("detectron2") is None:
        raise ImportError(DETECTRON2_INSTALL_HINT, name="detectron2")


_require_detectron2()

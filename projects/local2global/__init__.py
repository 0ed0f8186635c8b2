"""Local2Global: local-to-global query alignment for online video instance segmentation.

The package is imported as ``local2global`` (its files live in ``projects/local2global``, mapped by
``pyproject.toml``). Sub-packages:

* :mod:`local2global.modeling`   -- the segmenter (MaskDINO-compatible), the L2G aligner, criterion, matcher.
* :mod:`local2global.data`       -- YouTube-VIS / OVIS datasets, mappers, synthetic data, COCO pseudo-videos.
* :mod:`local2global.evaluation` -- the YouTube-VIS evaluator.
* :mod:`local2global.inference`  -- streaming (online) video inference.
"""

__version__ = "0.1.0"

"""Video panoptic segmentation metrics: VPQ and STQ exactly as VIPSeg's official scripts, fast.

* :func:`evaluate_vps` -- score a prediction folder (VIPSeg 720p format: RGB id PNGs + JSON), both metrics in
  one pass (:mod:`.evaluate`);
* :class:`VPSEvaluator` -- detectron2 ``DatasetEvaluator`` taking per-frame panoptic id maps (:mod:`.evaluator`);
* :func:`evaluate_vps_reference` -- the straightforward re-statement of the official loops (test oracle,
  :mod:`.reference`).

CLI: ``python -m local2global.evaluation.vps --gt-json GT.json --gt-dir GT_PNGS --pred-json pred.json
--pred-dir PRED_PNGS``. The definitions, encodings and measured agreement are in ``docs/VPS.md``.
"""

import importlib

from .panoptic_io import VPSFormatError

_LAZY = {
    "evaluate_vps": ".evaluate",
    "format_vps_table": ".evaluate",
    "write_results_json": ".evaluate",
    "VPSEvaluator": ".evaluator",
    "write_vps_predictions": ".evaluator",
    "evaluate_vps_reference": ".reference",
    "VPQAccumulator": ".vpq",
    "STQAccumulator": ".stq",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["VPSFormatError"] + list(_LAZY)

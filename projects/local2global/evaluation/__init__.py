"""YouTube-VIS / OVIS evaluation: the official ``ytvoseval`` AP (fast), its detectron2 evaluator and a CLI.

* :func:`evaluate_ytvis` -- score a results file against a ground-truth JSON (raw fractions);
* :class:`YTVISEvaluator` -- detectron2 ``DatasetEvaluator`` (percent; writes ``results.json`` / ``results.zip``);
* :func:`evaluate_ytvis_reference` -- the slow, obvious re-statement used as test oracle and benchmark baseline.

CLI: ``python -m local2global.evaluation.ytvis --gt GT.json --results RESULTS.json``.
"""

import importlib

from .results_io import YTVISFormatError, atomic_write_json, write_results_zip

# ``ytvis`` (the CLI module) is imported on first use, not here: ``python -m local2global.evaluation.ytvis`` would
# otherwise find it already in ``sys.modules`` when runpy executes it (RuntimeWarning, two copies of the module).
_LAZY = {
    "STAT_NAMES": ".ytvis",
    "YTVISEvaluator": ".ytvis",
    "evaluate_ytvis": ".ytvis",
    "format_results_table": ".ytvis",
    "evaluate_ytvis_reference": ".ytvis_reference",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

__all__ = [
    "YTVISFormatError",
    "atomic_write_json",
    "write_results_zip",
    "STAT_NAMES",
    "YTVISEvaluator",
    "evaluate_ytvis",
    "format_results_table",
    "evaluate_ytvis_reference",
]

"""YouTube-VIS / OVIS evaluation: the official ``ytvoseval`` AP (fast), its detectron2 evaluator and a CLI.

* :func:`evaluate_ytvis` -- score a results file against a ground-truth JSON (raw fractions);
* :class:`YTVISEvaluator` -- detectron2 ``DatasetEvaluator`` (percent; writes ``results.json`` / ``results.zip``);
* :func:`evaluate_ytvis_reference` -- the slow, obvious re-statement used as test oracle and benchmark baseline.

CLI: ``python -m local2global.evaluation.ytvis --gt GT.json --results RESULTS.json``.
"""

from .results_io import YTVISFormatError, atomic_write_json, write_results_zip
from .ytvis import STAT_NAMES, YTVISEvaluator, evaluate_ytvis, format_results_table
from .ytvis_reference import evaluate_ytvis_reference

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

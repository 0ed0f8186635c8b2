"""Reading the final evaluation figures of a finished run folder (``train.output_dir``).

Shared by ``scripts/sweep.py`` (one row per run) and ``scripts/run_demo.py`` (the demo's AP table).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

__all__ = ["REPORTED", "read_final_metrics"]

#: The YouTube-VIS figures reported in tables (SPEC §6).
REPORTED = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10"]


def read_final_metrics(run_dir: str) -> Optional[Dict[str, float]]:
    """The last evaluation of a run: the last ``metrics.json`` row with ``<task>/AP`` keys (or eval_results.json)."""
    path = os.path.join(run_dir, "metrics.json")
    found = None
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
                ev = {k: v for k, v in row.items() if "/" in k and k.split("/", 1)[1] in REPORTED + ["AP_long", "AP_short"]}
                if ev:
                    found = ev
    if found is None:
        path = os.path.join(run_dir, "eval_results.json")
        if os.path.isfile(path):
            with open(path) as f:
                res = json.load(f)
            found = {f"{task}/{k}": v for task, d in res.items() if isinstance(d, dict) for k, v in d.items()}
    return found

"""Benchmark cases, one module per measurement family; importing a module registers its cases."""

import importlib

MODULES = ["inference", "detrex_compare", "breakdown", "scaling", "rle_spill", "training", "evaluation", "accuracy",
           "trackers", "tracking", "demo_seeds", "parity", "postprocess"]


def load_all() -> None:
    """Import every case module (a missing optional module is skipped with a message)."""
    for name in MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise

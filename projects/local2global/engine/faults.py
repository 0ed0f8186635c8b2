"""Deprecated module path: the resume hooks live in :mod:`local2global.engine.resume_hooks`.

Fault injection is no longer part of the package: the reliability tests inject faults through the public
extension points of :mod:`local2global.engine.extensions` (``tests/tools/fault_injection.py``).
"""

from .resume_hooks import DeterministicStepHook, MetricHistoryHook, iteration_seed  # noqa: F401

__all__ = ["DeterministicStepHook", "MetricHistoryHook", "iteration_seed"]

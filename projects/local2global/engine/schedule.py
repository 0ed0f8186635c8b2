"""LR schedules whose milestones are fractions of ``train.max_iter`` (SPEC §5).

detectron2's ``LRScheduler`` hook evaluates an fvcore ``ParamScheduler`` at ``iter / max_iter``. An fvcore
``MultiStepParamScheduler`` with ``num_updates=R`` drops at ``milestone / R`` of training, whatever ``max_iter`` is;
fvcore requires ``num_updates >= len(values)`` and integer milestones, so ``num_updates=1`` is impossible with a
drop: :func:`multistep_at_fractions` takes fractions and builds the fvcore scheduler at a fine resolution.
"""

from __future__ import annotations

from typing import Sequence

from fvcore.common.param_scheduler import MultiStepParamScheduler

__all__ = ["multistep_at_fractions"]


def multistep_at_fractions(values: Sequence[float], milestones: Sequence[float],
                           resolution: int = 100000) -> MultiStepParamScheduler:
    """fvcore ``MultiStepParamScheduler`` that switches to ``values[i + 1]`` at fraction ``milestones[i]``.

    Args:
        values: the multipliers, e.g. ``[1.0, 0.1]``.
        milestones: increasing fractions in (0, 1), one fewer than ``values``, e.g. ``[0.5]``.
        resolution: ``num_updates`` of the fvcore scheduler (the fractions are rounded to ``1 / resolution``).

    Raises:
        ValueError: milestones not strictly increasing inside (0, 1), or a length mismatch.
    """
    values = [float(v) for v in values]
    milestones = [float(m) for m in milestones]
    if len(milestones) != len(values) - 1:
        raise ValueError(f"lr schedule: {len(values)} values need {len(values) - 1} milestones, got {milestones}")
    if any(not 0.0 < m < 1.0 for m in milestones) or any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"lr schedule: milestones must be increasing fractions of train.max_iter in (0, 1), "
                         f"got {milestones}")
    steps = [int(round(m * resolution)) for m in milestones]
    return MultiStepParamScheduler(values=values, milestones=steps, num_updates=resolution)

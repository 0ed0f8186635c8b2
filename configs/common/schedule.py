"""Linear warm-up + multi-step decay; every position is a FRACTION of ``train.max_iter`` (SPEC §5).

detectron2's LRScheduler hook evaluates the fvcore scheduler at ``iter / max_iter``; the multi-step part is an
fvcore ``MultiStepParamScheduler`` built by ``multistep_at_fractions`` (fvcore needs ``num_updates >= len(values)``
and integer milestones, so the fractions are converted at a fixed resolution), so ``train.max_iter=...`` keeps the
drop at the same fraction. Paper phase 2: x0.1 at 60k of 120k = 0.5.

    lr_multiplier.scheduler.milestones=[0.75]     drop later
    lr_multiplier.warmup_length=0.05              5% of training as warm-up
"""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

from local2global.engine.schedule import multistep_at_fractions

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(multistep_at_fractions)(values=[1.0, 0.1], milestones=[0.5]),
    warmup_length=0.01,
    warmup_factor=0.001,
    warmup_method="linear",
)

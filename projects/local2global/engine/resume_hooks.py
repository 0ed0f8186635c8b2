"""The hooks that make ``--resume`` exact: per-iteration seeding and the smoothed metrics' history.

:class:`DeterministicStepHook` re-seeds python's, numpy's and torch's global generators (and the criterion's own
generator, if it has one) before every iteration from ``(train.seed, iteration, rank)``, so the random draws of
the model (point sampling, denoising noise, reduced supervision, dropout) do not depend on what ran before:
a run resumed at iteration ``k`` draws what the uninterrupted run drew. The data side is keyed by the sample's
stream position (:func:`local2global.data.build.build_video_train_loader`), and :class:`MetricHistoryHook` carries
the smoothing window of the logged metrics across the restart.

Exactness holds for the same ``train.seed``, world size, total batch size, device and thread count
(``OMP_NUM_THREADS``: CPU kernels may sum in another order with another number of threads).
"""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

__all__ = ["DeterministicStepHook", "MetricHistoryHook", "iteration_seed"]


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    """A 32-bit seed that is a function of ``(seed, iteration, rank)`` only."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(iteration), int(rank)]).generate_state(1)[0])


class DeterministicStepHook(HookBase):
    """Seed every global generator (and ``criterion``'s own) from ``(seed, iteration, rank)`` before each step.

    Args:
        seed: the run's seed (``train.seed``, >= 0).
        model: the (possibly DDP-wrapped) model; its ``criterion`` is re-seeded too when it has a generator of
            its own (``VideoSetCriterion.get_rng_state() is not None``).
    """

    def __init__(self, seed: int, model: Optional[torch.nn.Module] = None):
        self.seed = int(seed)
        self.model = model

    def before_step(self):
        rank = comm.get_rank()
        s = iteration_seed(self.seed, self.trainer.iter, rank)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        model = getattr(self.model, "module", self.model)
        criterion = getattr(model, "criterion", None)
        if criterion is not None and hasattr(criterion, "get_rng_state") and criterion.get_rng_state() is not None:
            criterion.set_rng_state(torch.Generator().manual_seed(s ^ 0x5DEECE66D).get_state())


class MetricHistoryHook(HookBase):
    """Checkpoint the last ``keep`` values of every logged scalar, and put them back into the event storage on
    resume, so that the smoothed (median over a window) metrics that ``metrics.json`` and the console show after
    ``--resume`` equal those of an uninterrupted run. Restored values go into the histories only (not into the
    "latest" scalars), so no row is written twice.
    """

    def __init__(self, keep: int = 200):
        self.keep = int(keep)
        self._pending: Optional[dict] = None

    def state_dict(self):
        storage = getattr(self.trainer, "storage", None)
        if storage is None:
            return {}
        hints = storage.smoothing_hints()
        return {"histories": {k: [(float(v), int(i)) for v, i in buf.values()[-self.keep:]]
                              for k, buf in storage.histories().items()},
                "hints": dict(hints)}

    def load_state_dict(self, state_dict):
        self._pending = dict(state_dict)

    def before_train(self):
        if not self._pending:
            return
        storage = self.trainer.storage
        hints = self._pending.get("hints", {})
        for name, values in self._pending.get("histories", {}).items():
            if not hints.get(name, True):
                continue  # logged as the latest value only (lr, evaluation results): no window to continue
            for v, i in values:
                if i < self.trainer.start_iter:
                    storage.put_scalar(name, v, smoothing_hint=True, cur_iter=i)
        self._pending = None

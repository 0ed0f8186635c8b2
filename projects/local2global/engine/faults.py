"""Fault injection for the reliability tests, and the hooks that make ``--resume`` exact.

Faults are switched on by environment variables (read when the trainer is built; all unset in normal runs):

==================================  ====================================================================
``L2G_FAULT_KILL_AT_ITER=k``        SIGKILL this process after iteration ``k`` (after its checkpoint and
                                    metrics are written)
``L2G_FAULT_RAISE_AT_ITER=k``       raise ``RuntimeError`` at the start of iteration ``k`` (a crashed worker)
``L2G_FAULT_NAN_AT_ITER=k``         make one loss term NaN at iteration ``k`` (``L2G_FAULT_NAN_TERM``, default
                                    the first term)
``L2G_FAULT_KILL_DURING_SAVE=n``    SIGKILL during the ``n``-th checkpoint save of this process, leaving a
                                    half-written temporary file (the checkpoint being replaced stays intact)
``L2G_FAULT_RANK=r``                apply the faults above on rank ``r`` only (default: every rank)
==================================  ====================================================================

:class:`DeterministicStepHook` re-seeds python's, numpy's and torch's global generators (and the criterion's own
generator, if it has one) before every iteration from ``(train.seed, iteration, rank)``, so the random draws of
the model (point sampling, denoising noise, reduced supervision, dropout) do not depend on what ran before:
a run resumed at iteration ``k`` draws what the uninterrupted run drew. The data side is keyed by the sample's
stream position (:func:`local2global.data.build.build_video_train_loader`), and :class:`MetricHistoryHook` carries
the smoothing window of the logged metrics across the restart.

Exactness holds for the same ``train.seed``, world size, total batch size, device and thread count
(``OMP_NUM_THREADS``: CPU kernels may sum in another order with another number of threads). A kill while saving can
leave a ``.model_XXXXXXX.pth.*.tmp`` file next to the checkpoints; it is never read and may be deleted.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from typing import Callable, Optional

import numpy as np
import torch
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

__all__ = ["DeterministicStepHook", "MetricHistoryHook", "FaultInjectionHook", "build_fault_hook",
           "save_fault_callback", "iteration_seed"]

logger = logging.getLogger(__name__)


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from e


def _fault_applies() -> bool:
    rank = _env_int("L2G_FAULT_RANK")
    return rank is None or rank == comm.get_rank()


def _kill_self(reason: str) -> None:
    logger.warning("fault injection: SIGKILL (%s)", reason)
    for h in logging.getLogger().handlers + logging.getLogger("local2global").handlers:
        try:
            h.flush()
        except Exception:  # noqa: BLE001 - best effort before dying
            pass
    os.kill(os.getpid(), signal.SIGKILL)


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
        for name, values in self._pending.get("histories", {}).items():
            buf = storage._history[name]  # noqa: SLF001 - EventStorage has no public way to seed a history
            for v, i in values:
                if i < self.trainer.start_iter:
                    buf.update(v, i)
            storage._smoothing_hints.setdefault(name, self._pending.get("hints", {}).get(name, True))  # noqa: SLF001
        self._pending = None


class FaultInjectionHook(HookBase):
    """The iteration faults of the module docstring (register it last, so it runs after checkpoint and writer)."""

    def __init__(self, kill_at: Optional[int], raise_at: Optional[int], nan_at: Optional[int],
                 nan_term: Optional[str], model: torch.nn.Module):
        self.kill_at, self.raise_at, self.nan_at, self.nan_term = kill_at, raise_at, nan_at, nan_term
        self.model = model
        self._handle = None

    def before_step(self):
        it = self.trainer.iter
        if self.raise_at is not None and it == self.raise_at:
            raise RuntimeError(f"fault injection: worker of rank {comm.get_rank()} crashed at iteration {it}")
        if self.nan_at is not None and it == self.nan_at:
            term = self.nan_term

            def poison(module, inputs, output):
                if isinstance(output, dict) and output:
                    key = term if term in output else next(iter(output))
                    output = dict(output)
                    output[key] = output[key] * float("nan")
                    return output
                return output

            self._handle = self.model.register_forward_hook(poison)

    def after_step(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.kill_at is not None and self.trainer.iter == self.kill_at:
            _kill_self(f"L2G_FAULT_KILL_AT_ITER={self.kill_at}")


def build_fault_hook(model: torch.nn.Module) -> Optional[FaultInjectionHook]:
    """The :class:`FaultInjectionHook` configured by the environment, or ``None`` when no fault is set."""
    if not _fault_applies():
        return None
    kill_at, raise_at = _env_int("L2G_FAULT_KILL_AT_ITER"), _env_int("L2G_FAULT_RAISE_AT_ITER")
    nan_at = _env_int("L2G_FAULT_NAN_AT_ITER")
    if kill_at is None and raise_at is None and nan_at is None:
        return None
    logger.warning("fault injection enabled: kill_at=%s raise_at=%s nan_at=%s", kill_at, raise_at, nan_at)
    return FaultInjectionHook(kill_at, raise_at, nan_at, os.environ.get("L2G_FAULT_NAN_TERM") or None, model)


def save_fault_callback() -> Optional[Callable[[str], None]]:
    """For ``L2G_FAULT_KILL_DURING_SAVE=n``: a callback for the checkpointer, called with the temporary file
    after it is written and before it replaces the checkpoint; on the ``n``-th call it truncates the file to
    half (a write cut short) and SIGKILLs the process."""
    n = _env_int("L2G_FAULT_KILL_DURING_SAVE")
    if n is None or not _fault_applies():
        return None
    calls = {"n": 0}

    def callback(tmp_path: str) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            size = os.path.getsize(tmp_path)
            with open(tmp_path, "r+b") as f:
                f.truncate(size // 2)
            _kill_self(f"L2G_FAULT_KILL_DURING_SAVE={n} while writing {tmp_path}")

    return callback

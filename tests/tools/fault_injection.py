"""Fault injection for the reliability tests, through the trainer's public extension points.

:func:`register` adds a hook factory and a checkpoint-save callback (:mod:`local2global.engine.extensions`) that
read these environment variables when a trainer is built (all unset: they add nothing):

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

``train_net_with_faults.py`` (next to this file) is ``scripts/train_net.py`` with these registered in every process.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Optional

import torch
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

from local2global.engine.extensions import register_checkpoint_save_callback, register_hook

logger = logging.getLogger("local2global.tests.faults")


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


class FaultInjectionHook(HookBase):
    """The iteration faults of the module docstring (registered after the standard hooks, so it runs after the
    checkpointer and the writers)."""

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

            self._handle = self.model.register_forward_hook(poison)

    def after_step(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.kill_at is not None and self.trainer.iter == self.kill_at:
            _kill_self(f"L2G_FAULT_KILL_AT_ITER={self.kill_at}")


def fault_hook(model: torch.nn.Module) -> Optional[FaultInjectionHook]:
    """The hook configured by the environment, or ``None`` when no iteration fault is set for this rank."""
    if not _fault_applies():
        return None
    kill_at, raise_at = _env_int("L2G_FAULT_KILL_AT_ITER"), _env_int("L2G_FAULT_RAISE_AT_ITER")
    nan_at = _env_int("L2G_FAULT_NAN_AT_ITER")
    if kill_at is None and raise_at is None and nan_at is None:
        return None
    logger.warning("fault injection enabled: kill_at=%s raise_at=%s nan_at=%s", kill_at, raise_at, nan_at)
    return FaultInjectionHook(kill_at, raise_at, nan_at, os.environ.get("L2G_FAULT_NAN_TERM") or None, model)


_SAVES = {"n": 0}


def kill_during_save(tmp_path: str) -> None:
    """``L2G_FAULT_KILL_DURING_SAVE=n``: on this process's ``n``-th save, truncate the temporary file to half (a
    write cut short) and SIGKILL the process before it replaces the checkpoint."""
    n = _env_int("L2G_FAULT_KILL_DURING_SAVE")
    if n is None or not _fault_applies():
        return
    _SAVES["n"] += 1
    if _SAVES["n"] == n:
        size = os.path.getsize(tmp_path)
        with open(tmp_path, "r+b") as f:
            f.truncate(size // 2)
        _kill_self(f"L2G_FAULT_KILL_DURING_SAVE={n} while writing {tmp_path}")


def register() -> None:
    """Register the hook factory and the save callback (idempotent)."""
    register_hook(fault_hook)
    register_checkpoint_save_callback(kill_during_save)

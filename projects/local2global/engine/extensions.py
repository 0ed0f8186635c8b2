"""Public extension points of the training loop: extra hooks and checkpoint-save callbacks.

Code outside the package (a profiler, a custom logger, the fault injection of the reliability tests) adds to the
trainer without editing it:

* :func:`register_hook` adds a factory ``factory(model) -> Optional[HookBase]``; :func:`local2global.engine.trainer.
  do_train` calls every factory when it builds a trainer and registers the hooks it returns after the standard
  ones (so they run after the checkpointer and the writers), in registration order.
* :func:`register_checkpoint_save_callback` adds ``callback(tmp_path)``, called with the temporary file of every
  checkpoint save after it is written and before it atomically replaces the checkpoint.

The lists are per process. A launcher that registers at import time, at its module's top level, reaches every
process of a run: ``scripts/train_net.py``-style launchers spawn DDP workers with ``start_method="spawn"``, which
imports the launching module (as ``__mp_main__``) in each worker before it runs. ``tests/tools/
train_net_with_faults.py`` is such a launcher.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from detectron2.engine.train_loop import HookBase

__all__ = ["HOOK_FACTORIES", "CHECKPOINT_SAVE_CALLBACKS", "register_hook", "register_checkpoint_save_callback",
           "build_extra_hooks", "checkpoint_save_callback"]

HookFactory = Callable[[torch.nn.Module], Optional[HookBase]]

#: Registered hook factories (:func:`register_hook`), called in this order.
HOOK_FACTORIES: List[HookFactory] = []
#: Registered checkpoint-save callbacks (:func:`register_checkpoint_save_callback`), called in this order.
CHECKPOINT_SAVE_CALLBACKS: List[Callable[[str], None]] = []


def register_hook(factory: HookFactory) -> HookFactory:
    """Add a hook factory (usable as a decorator); registering the same factory twice adds it once."""
    if factory not in HOOK_FACTORIES:
        HOOK_FACTORIES.append(factory)
    return factory


def register_checkpoint_save_callback(callback: Callable[[str], None]) -> Callable[[str], None]:
    """Add a checkpoint-save callback (usable as a decorator); the same callback twice is added once."""
    if callback not in CHECKPOINT_SAVE_CALLBACKS:
        CHECKPOINT_SAVE_CALLBACKS.append(callback)
    return callback


def build_extra_hooks(model: torch.nn.Module) -> List[HookBase]:
    """The hooks of every registered factory for ``model`` (factories returning ``None`` add nothing)."""
    hooks = [factory(model) for factory in HOOK_FACTORIES]
    return [h for h in hooks if h is not None]


def checkpoint_save_callback() -> Optional[Callable[[str], None]]:
    """One callable running every registered save callback, or ``None`` when there is none."""
    if not CHECKPOINT_SAVE_CALLBACKS:
        return None
    callbacks = list(CHECKPOINT_SAVE_CALLBACKS)

    def run_all(tmp_path: str) -> None:
        for callback in callbacks:
            callback(tmp_path)

    return run_all

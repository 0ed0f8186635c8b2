"""The trainer's public extension points: registered hook factories and save callbacks reach ``do_train``."""

from __future__ import annotations

import pytest
from detectron2.engine.train_loop import HookBase

from local2global.engine import extensions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def clean_lists(monkeypatch):
    monkeypatch.setattr(extensions, "HOOK_FACTORIES", [])
    monkeypatch.setattr(extensions, "CHECKPOINT_SAVE_CALLBACKS", [])


def test_factories_in_order_none_dropped_and_idempotent(clean_lists):
    class Mark(HookBase):
        def __init__(self, name):
            self.name = name

    first = extensions.register_hook(lambda model: Mark("a"))
    extensions.register_hook(lambda model: None)
    extensions.register_hook(lambda model: Mark(type(model).__name__))
    extensions.register_hook(first)  # twice: once
    hooks = extensions.build_extra_hooks(object())
    assert [h.name for h in hooks] == ["a", "object"]


def test_save_callbacks_run_in_order_or_none(clean_lists):
    assert extensions.checkpoint_save_callback() is None
    seen = []
    extensions.register_checkpoint_save_callback(lambda p: seen.append(("x", p)))
    extensions.register_checkpoint_save_callback(lambda p: seen.append(("y", p)))
    extensions.checkpoint_save_callback()("tmp.pth")
    assert seen == [("x", "tmp.pth"), ("y", "tmp.pth")]


def test_registered_hook_and_callback_reach_a_training_run(clean_lists, tmp_path):
    """A hook registered in-process sees every iteration of ``do_train`` after the standard hooks, and the save
    callback sees every checkpoint's temporary file before it is moved into place."""
    from test_engine import make_cfg

    from local2global.engine.trainer import do_train

    steps, saved = [], []

    class Count(HookBase):
        def after_step(self):
            steps.append(self.trainer.iter)

    extensions.register_hook(lambda model: Count())
    extensions.register_checkpoint_save_callback(lambda p: saved.append(p))
    trainer = do_train(make_cfg(tmp_path, max_iter=4, **{"checkpointer.period": 2}))
    assert steps == [0, 1, 2, 3]
    assert type(trainer._hooks[-1]).__name__ == "Count"  # noqa: SLF001 - registered last
    # iterations 1 and 3 (period 2) and model_final, each written to a temporary file first
    assert len(saved) == 3 and all(p.endswith(".tmp") and "/." in p for p in saved)
    assert (tmp_path / "model_final.pth").is_file() and (tmp_path / "model_0000001.pth").is_file()

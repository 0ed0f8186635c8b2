"""The modeling layout moved (``layers/``, ``modeling/segmenter``, ``criteria``, ``postprocessing``); the old import
paths stay valid as the very same module objects, so old configs, ``config.yaml`` files of old runs and user code
(and monkeypatching through either path) keep working."""

from __future__ import annotations

import importlib

import pytest
from detectron2.config import LazyConfig, instantiate

pytestmark = pytest.mark.timeout(60)

MOVED = {
    "ms_deform_attn": "layers.ms_deform_attn", "box_ops": "layers.box_ops", "point_sampling": "layers.point_sampling",
    "position_encoding": "layers.position_encoding", "activation": "layers.activation",
    "backbone": "modeling.segmenter.backbone", "pixel_decoder": "modeling.segmenter.pixel_decoder",
    "deformable_encoder": "modeling.segmenter.deformable_encoder",
    "deformable_decoder": "modeling.segmenter.deformable_decoder", "decoder": "modeling.segmenter.decoder",
    "query_selection": "modeling.segmenter.query_selection", "denoising": "modeling.segmenter.denoising",
    "criterion": "modeling.criteria.set_criterion", "video_criterion": "modeling.criteria.video_criterion",
    "matcher": "modeling.criteria.matcher", "postprocess": "modeling.postprocessing.video_instances",
    "panoptic_postprocess": "modeling.postprocessing.video_panoptic",
}


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_old_path_is_the_new_module(old, new):
    assert importlib.import_module(f"local2global.modeling.{old}") is importlib.import_module(f"local2global.{new}")


def test_no_module_of_the_new_layout_imports_from_an_old_path():
    import pathlib

    root = pathlib.Path(importlib.import_module("local2global").__file__).parent
    olds = tuple(f"local2global.modeling.{o} " for o in MOVED) + tuple(f"local2global.modeling.{o}\n" for o in MOVED)
    offenders = []
    for p in root.rglob("*.py"):
        if p.parent.name == "modeling" and p.stem in MOVED:
            continue  # the shims themselves
        text = p.read_text()
        offenders += [str(p.relative_to(root)) for o in olds if f"from {o.strip()} import" in text
                      or f"import {o.strip()}" in text]
    assert not offenders


def test_a_config_written_with_old_target_paths_still_builds(tmp_path):
    """A ``config.yaml`` saved before the move names ``_target_`` by the old module paths."""
    cfg = LazyConfig.load("configs/local2global_tiny_synthetic.py")
    path = tmp_path / "config.yaml"
    LazyConfig.save(cfg, str(path))
    text = path.read_text()
    for old, new in MOVED.items():
        text = text.replace(f"local2global.{new}.", f"local2global.modeling.{old}.")
    assert "local2global.modeling.criterion.SetCriterion" in text and "local2global.layers" not in text
    path.write_text(text)
    model = instantiate(LazyConfig.load(str(path)).model)
    assert type(model.criterion.set_criterion).__module__ == "local2global.modeling.criteria.set_criterion"

"""Every LazyConfig file loads and its model instantiates; the recipes carry the paper's numbers and the keys that
detectron2's and detrex's training tools read.
"""

import gc
from pathlib import Path

import pytest
from detectron2.config import LazyConfig, instantiate
from omegaconf import OmegaConf

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.py"))
EXPERIMENTS = [c for c in CONFIGS if "/common/" not in c and "/models/" not in c]

# the keys detrex's tools/train_net.py and configs/common/train.py use (and detectron2's tool a subset of them)
DETREX_TRAIN_KEYS = {
    "output_dir", "init_checkpoint", "max_iter", "amp", "ddp", "clip_grad", "seed", "fast_dev_run",
    "checkpointer", "eval_period", "log_period", "wandb", "model_ema", "device",
}


def _need_model_and_data():
    pytest.importorskip("local2global.modeling.segmenter.decoder", reason="the model code is not importable yet")
    pytest.importorskip("local2global.data.build", reason="the data code is not importable yet")


def load(path):
    _need_model_and_data()
    return LazyConfig.load(str(REPO / path))


def test_config_files_found():
    assert len(CONFIGS) >= 20 and "configs/local2global_tiny_synthetic.py" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_loads_and_model_instantiates(path):
    cfg = load(path)
    assert len(cfg) > 0
    if "model" in cfg:
        model = instantiate(cfg.model)
        assert sum(p.numel() for p in model.parameters()) > 0
        del model
        gc.collect()


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_experiment_has_everything_the_tools_read(path):
    cfg = load(path)
    for key in ("model", "optimizer", "lr_multiplier", "train", "dataloader"):
        assert key in cfg, f"{path} lacks {key}"
    # train_net saves and resolves the whole config: a node imported from a shared file (configs/common/) under its
    # own name becomes a top-level key whose ``${..x}`` interpolations have no parent to resolve against
    extra = set(cfg.keys()) - {"model", "optimizer", "lr_multiplier", "train", "dataloader", "sweep"}
    assert not extra, f"{path}: top-level keys {sorted(extra)} (import shared nodes as _name)"
    OmegaConf.to_container(cfg, resolve=True)
    assert DETREX_TRAIN_KEYS <= set(cfg.train.keys()), DETREX_TRAIN_KEYS - set(cfg.train.keys())
    assert {"enabled", "params"} <= set(cfg.train.clip_grad) and {"max_norm", "norm_type"} <= set(cfg.train.clip_grad.params)
    assert {"enabled", "decay", "use_ema_weights_for_eval_only"} <= set(cfg.train.model_ema)
    assert "train" in cfg.dataloader
    if "evaluator" in cfg.dataloader:
        assert "test" in cfg.dataloader
        assert cfg.dataloader.evaluator.dataset_name == cfg.dataloader.test.dataset.names
    # the schedule instantiates and its milestone is a fraction of max_iter
    sched = instantiate(cfg.lr_multiplier)
    assert 0.0 < sched(0.99) < sched(0.3) or sched(0.99) == sched(0.3)


@pytest.mark.parametrize("path, num_classes, topk, train_name", [
    ("configs/local2global_r50_ytvis19.py", 40, 10, "ytvis_2019_train"),
    ("configs/local2global_r50_ytvis21.py", 40, 10, "ytvis_2021_train"),
    ("configs/local2global_r50_ovis.py", 25, 20, "ovis_train"),
])
def test_phase2_recipes_match_the_paper(path, num_classes, topk, train_name):
    cfg = load(path)
    assert cfg.model.num_classes == num_classes and cfg.model.postprocessor.test_topk == topk
    assert cfg.dataloader.train.dataset.names == train_name
    assert cfg.dataloader.train.mapper.num_frames == 4 and cfg.dataloader.train.pseudo_mapper.num_frames == 4
    assert cfg.dataloader.train.pseudo_ratio > 0 and cfg.dataloader.train.total_batch_size == 8
    assert cfg.optimizer.lr == 5e-5 and cfg.optimizer.weight_decay == 0.05
    assert cfg.optimizer.params.lr_factor_func.factor == 0.1
    assert cfg.train.max_iter == 120000 and list(cfg.lr_multiplier.scheduler.milestones) == [0.5]
    sched = instantiate(cfg.lr_multiplier)
    assert sched(59999 / 120000) == pytest.approx(1.0) and sched(60000 / 120000) == pytest.approx(0.1)
    assert cfg.train.clip_grad.enabled and cfg.train.clip_grad.params.max_norm == 0.01
    assert cfg.train.trainable_params is None
    assert "phase1" in cfg.train.init_checkpoint
    aug = cfg.dataloader.train.mapper.augmentations[0]
    assert min(aug.short_edge_length) == 360 and max(aug.short_edge_length) == 480
    assert cfg.dataloader.test.mapper.augmentations[0].short_edge_length == 360


def test_ytvis22_evaluates_the_2021_model():
    cfg = load("configs/local2global_r50_ytvis22.py")
    assert cfg.dataloader.test.dataset.names == "ytvis_2022_val"
    assert cfg.dataloader.evaluator.dataset_name == "ytvis_2022_val"
    assert "ytvis21" in cfg.train.init_checkpoint and cfg.model.num_classes == 40


def test_phase1_trains_exactly_the_aligner_global_embedding_lpos_and_ref_point_head():
    from local2global.engine.freeze import apply_trainable_params

    cfg = load("configs/local2global_r50_coco_phase1.py")
    assert cfg.model.tracker.first_frame == "learned" and cfg.train.max_iter == 60000 and cfg.model.num_classes == 80
    assert cfg.train.init_checkpoint
    model = instantiate(cfg.model)
    state = apply_trainable_params(model, cfg.train.trainable_params)
    trainable = {n for n, t in state.items() if t}
    expected = {n for n, _ in model.named_parameters()
                if n.startswith(("tracker.aligner.", "tracker.global_query_embed.", "decoder.decoder.ref_point_head."))}
    assert trainable == expected
    assert "tracker.aligner.local_pos_embed.weight" in trainable and "tracker.global_query_embed.weight" in trainable
    assert any(n.startswith("decoder.decoder.ref_point_head.") for n in trainable)
    assert not any(n.startswith(("backbone.", "pixel_decoder.", "decoder.class_embed", "decoder.mask_embed"))
                   for n in trainable)


@pytest.mark.parametrize("path, key, value", [
    ("configs/ablations/table3_baseline.py", "model.tracker.aligner", None),
    ("configs/ablations/table3_baseline.py", "model.tracker.global_pos", "static"),
    ("configs/ablations/table3_baseline_refined.py", "model.tracker.global_pos", "refined"),
    ("configs/ablations/table3_aligner.py", "model.tracker.global_pos", "static"),
    ("configs/ablations/ovis/table3_baseline.py", "model.tracker.aligner", None),
    ("configs/ablations/ovis/table3_baseline.py", "model.num_classes", 25),
    ("configs/ablations/ovis/table5_width2048.py", "model.tracker.aligner.dim_feedforward", 2048),
    ("configs/ablations/ovis/table6_lpos_dynamic.py", "model.tracker.aligner.local_pos", "dynamic"),
    ("configs/ablations/ytvis21/table3_aligner.py", "model.tracker.global_pos", "static"),
    ("configs/ablations/ytvis21/table3_baseline_refined.py", "model.tracker.global_pos", "refined"),
    ("configs/ablations/table3_trajectory.py", "model.tracker.global_pos", "trajectory"),
    ("configs/ablations/table5_width512.py", "model.tracker.aligner.dim_feedforward", 512),
    ("configs/ablations/table5_width1024.py", "model.tracker.aligner.dim_feedforward", 1024),
    ("configs/ablations/table5_width2048.py", "model.tracker.aligner.dim_feedforward", 2048),
    ("configs/ablations/table6_lpos_static.py", "model.tracker.aligner.local_pos", "static"),
    ("configs/ablations/table6_lpos_dynamic.py", "model.tracker.aligner.local_pos", "dynamic"),
    ("configs/ablations/table6_reduced_sup_on.py", "model.criterion.reduced_supervision", True),
    ("configs/ablations/table6_reduced_sup_off.py", "model.criterion.reduced_supervision", False),
])
def test_ablation_files_set_their_row(path, key, value):
    from omegaconf import OmegaConf

    cfg = load(path)
    assert OmegaConf.select(cfg, key) == value
    assert cfg.train.output_dir.endswith(Path(path).stem)


def test_tiny_device_is_an_interpolation_that_overrides_reach():
    import torch

    from local2global.engine.overrides import apply_overrides_strict

    cfg = load("configs/local2global_tiny_synthetic.py")
    assert cfg.train.device == ("cuda" if torch.cuda.is_available() else "cpu")
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(cfg.train, resolve=False)["device"] == "${l2g_device:}"
    apply_overrides_strict(cfg, ["train.device=cpu"])
    assert cfg.train.device == "cpu"
    from local2global.data.categories import SYNTHETIC_VIS_CATEGORIES

    assert cfg.model.num_classes == len(SYNTHETIC_VIS_CATEGORIES)
    assert instantiate(cfg.model).num_classes == len(SYNTHETIC_VIS_CATEGORIES)


def test_derived_values_follow_overrides():
    from local2global.engine.overrides import apply_overrides_strict

    cfg = load("configs/local2global_tiny_synthetic.py")
    apply_overrides_strict(cfg, ["train.output_dir=/tmp/somewhere", "model.num_queries=12"])
    assert cfg.dataloader.evaluator.output_dir == "/tmp/somewhere/inference"
    model = instantiate(cfg.model)
    assert model.num_queries == 12 and model.aligner.local_pos_embed.num_embeddings == 12

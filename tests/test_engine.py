"""The training engine on a toy model (detectron2 ``tests/test_engine.py`` spirit): metrics.json, checkpoints,
resume, eval-only, the fractional lr schedule, trainable-parameter patterns, clipping, EMA, non-finite losses.
"""

import json
import os
from collections import OrderedDict

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.evaluation import DatasetEvaluator
from detectron2.solver import LRMultiplier
from omegaconf import OmegaConf
from torch import nn

from local2global.engine.freeze import apply_trainable_params
from local2global.engine.trainer import (L2GCPUAutocastTrainer, L2GSimpleTrainer, build_trainer, do_eval_only,
                                         do_train)

pytestmark = pytest.mark.timeout(120)

DIM = 4
TRUE_W = torch.tensor([1.0, -2.0, 0.5, 3.0])


class ToyModel(nn.Module):
    """y = head(relu(backbone(x))); training: {"loss_mse", "loss_l1"}; eval: one dict per sample."""

    def __init__(self, nan_at_call: int = -1):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(DIM, 8)
        self.head = nn.Linear(8, 1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.nan_at_call = nan_at_call

    def forward(self, batch):
        x = torch.stack([b["x"] for b in batch]).to(self.head.weight.device)
        pred = self.head(torch.relu(self.backbone(x))).squeeze(-1)
        if not self.training:
            return [{"pred": float(p)} for p in pred]
        y = torch.stack([b["y"] for b in batch]).to(pred.device)
        loss_mse = ((pred - y) ** 2).mean()
        if int(self.calls) == self.nan_at_call:
            loss_mse = loss_mse * float("nan")
        self.calls += 1
        return {"loss_mse": loss_mse, "loss_l1": 0.1 * (pred - y).abs().mean()}


def _sample(g):
    x = torch.randn(DIM, generator=g)
    return {"x": x, "y": (x * TRUE_W).sum()}


class ToyTrainLoader:
    """Infinite batches of 8 (deterministic)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        while True:
            yield [_sample(g) for _ in range(8)]


def toy_test_loader(n: int = 6):
    g = torch.Generator().manual_seed(123)
    return [[_sample(g)] for _ in range(n)]


class ToyEvaluator(DatasetEvaluator):
    def reset(self):
        self.err = []

    def process(self, inputs, outputs):
        for i, o in zip(inputs, outputs):
            self.err.append((o["pred"] - float(i["y"])) ** 2)

    def evaluate(self):
        return OrderedDict(toy={"mse": sum(self.err) / len(self.err)})


def make_cfg(tmp_path, max_iter=6, **train):
    """The real common train/optim/schedule files + a toy model, loader and evaluator."""
    cfg = OmegaConf.create(flags={"allow_objects": True})
    cfg.train = LazyConfig.load("configs/common/train.py").train
    cfg.optimizer = LazyConfig.load("configs/common/optim.py").optimizer
    cfg.lr_multiplier = LazyConfig.load("configs/common/schedule.py").lr_multiplier
    cfg.model = L(ToyModel)()
    cfg.dataloader = OmegaConf.create(flags={"allow_objects": True})
    cfg.dataloader.train = L(ToyTrainLoader)(seed=0)
    cfg.dataloader.test = L(toy_test_loader)(n=6)
    cfg.dataloader.evaluator = L(ToyEvaluator)()
    cfg.optimizer.lr = 0.02
    cfg.optimizer.weight_decay = 0.0
    cfg.optimizer.params.lr_factor_func.factor = 1.0
    cfg.lr_multiplier.warmup_length = 0.0
    cfg.lr_multiplier.scheduler.milestones = [0.5]
    cfg.train.update(dict(device="cpu", max_iter=max_iter, output_dir=str(tmp_path), log_period=1, eval_period=0,
                          checkpointer=dict(period=3, max_to_keep=10), seed=0))
    for k, v in train.items():
        OmegaConf.update(cfg, f"train.{k}", v, merge=True)
    return cfg


def read_metrics(path):
    with open(os.path.join(path, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_train_writes_metrics_checkpoints_and_final_eval(tmp_path):
    cfg = make_cfg(tmp_path, max_iter=6)
    trainer = do_train(cfg)
    assert isinstance(trainer, L2GSimpleTrainer) and trainer.iter == 6
    files = set(os.listdir(tmp_path))
    assert {"model_0000002.pth", "model_0000005.pth", "model_final.pth", "last_checkpoint", "metrics.json"} <= files
    assert open(tmp_path / "last_checkpoint").read().strip() == "model_final.pth"
    assert torch.load(tmp_path / "model_final.pth", weights_only=False)["iteration"] == 5
    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if "total_loss" in r]
    assert [r["iteration"] for r in train_rows] == list(range(6))
    # (JSONWriter writes medians over a window; at iteration 0 the window holds one value)
    assert train_rows[0]["total_loss"] == pytest.approx(train_rows[0]["loss_mse"] + train_rows[0]["loss_l1"])
    # lr: base until 0.5 * max_iter, x0.1 from there (no warm-up here)
    assert [r["lr"] for r in train_rows] == pytest.approx([0.02] * 3 + [0.002] * 3)
    final = [r for r in rows if "toy/mse" in r]
    assert len(final) == 1 and final[0]["iteration"] == 6

    # the evaluation in metrics.json is the evaluation of the saved final weights
    model = ToyModel()
    model.load_state_dict(torch.load(tmp_path / "model_final.pth", weights_only=False)["model"])
    model.eval()
    with torch.no_grad():
        errs = [(model(b)[0]["pred"] - float(b[0]["y"])) ** 2 for b in toy_test_loader(6)]
    assert final[0]["toy/mse"] == pytest.approx(sum(errs) / len(errs), rel=1e-6)


def test_resume_continues_from_last_checkpoint(tmp_path):
    do_train(make_cfg(tmp_path, max_iter=4))
    first = read_metrics(tmp_path)
    cfg = make_cfg(tmp_path, max_iter=8)
    trainer = do_train(cfg, resume=True)
    assert trainer.iter == 8
    rows = read_metrics(tmp_path)
    iters = [r["iteration"] for r in rows[len(first):] if "total_loss" in r]
    assert iters == [4, 5, 6, 7]  # continues after the stored iteration 3
    # the resumed run's model counted its calls from the checkpointed buffer: 4 + 4 forward passes
    assert int(torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]["calls"]) == 8
    # the schedule is evaluated at iter / max_iter of the new run: drop at 4 of 8
    lr = {r["iteration"]: r["lr"] for r in rows[len(first):] if "lr" in r}
    assert lr[4] == pytest.approx(0.002) and lr[7] == pytest.approx(0.002)


def test_resume_without_checkpoint_starts_from_zero(tmp_path):
    trainer = do_train(make_cfg(tmp_path, max_iter=2), resume=True)
    assert trainer.iter == 2 and [r["iteration"] for r in read_metrics(tmp_path) if "total_loss" in r] == [0, 1]


def test_eval_only_loads_init_checkpoint(tmp_path):
    do_train(make_cfg(tmp_path / "train", max_iter=5))
    trained = [r for r in read_metrics(tmp_path / "train") if "toy/mse" in r][0]["toy/mse"]
    cfg = make_cfg(tmp_path / "eval", init_checkpoint=str(tmp_path / "train" / "model_final.pth"))
    ret = do_eval_only(cfg)
    assert ret["toy"]["mse"] == pytest.approx(trained, rel=1e-6)
    saved = json.load(open(tmp_path / "eval" / "eval_results.json"))
    assert saved["toy"]["mse"] == pytest.approx(trained, rel=1e-6)
    # a fresh (untrained) model scores differently
    untrained = do_eval_only(make_cfg(tmp_path / "eval2"))
    assert untrained["toy"]["mse"] != pytest.approx(trained, rel=1e-3)


def test_trainable_patterns_exact_set_and_frozen_weights_unchanged(tmp_path):
    model = ToyModel()
    state = apply_trainable_params(model, ["head.*"])
    assert {n for n, t in state.items() if t} == {"head.weight", "head.bias"}
    assert apply_trainable_params(ToyModel(), ["backbone"])["backbone.bias"] is True  # module prefix form
    assert all(apply_trainable_params(ToyModel(), None).values())
    with pytest.raises(ValueError, match="'haed.\\*'"):
        apply_trainable_params(ToyModel(), ["haed.*"])

    cfg = make_cfg(tmp_path, max_iter=3, trainable_params=["head.*"])
    init = ToyModel().state_dict()
    do_train(cfg)
    final = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    assert torch.equal(final["backbone.weight"], init["backbone.weight"])
    assert not torch.equal(final["head.weight"], init["head.weight"])
    params_cfg = make_cfg(tmp_path, trainable_params=["head.weight"]).optimizer.params
    params_cfg.model = ToyModel()
    groups = instantiate(params_cfg)  # freezing happens in the optimizer's parameter function
    assert sum(len(g["params"]) for g in groups) == 1


def test_backbone_lr_factor_in_param_groups():
    cfg = make_cfg("/tmp/unused")
    cfg.optimizer.params.lr_factor_func.factor = 0.1
    cfg.optimizer.params.model = ToyModel()
    opt = instantiate(cfg.optimizer)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    model = cfg.optimizer.params.model
    assert lrs[id(model.backbone.weight)] == pytest.approx(0.002) and lrs[id(model.head.weight)] == pytest.approx(0.02)


@pytest.mark.parametrize("max_iter", [10, 100, 1000])
def test_schedule_milestones_are_fractions_of_max_iter(max_iter):
    sched = instantiate(LazyConfig.load("configs/common/schedule.py").lr_multiplier)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    mult = LRMultiplier(opt, sched, max_iter)
    lrs = []
    for _ in range(max_iter):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        mult.step()
    drop = next(i for i in range(1, max_iter) if lrs[i] < 0.5 * lrs[i - 1])
    assert drop == max_iter // 2
    warm_end = max(1, int(0.01 * max_iter))
    assert lrs[0] == pytest.approx(0.001) and lrs[warm_end] == pytest.approx(1.0)


def test_gradient_clipping_bounds_the_update(tmp_path):
    cfg = make_cfg(tmp_path, max_iter=1, **{"clip_grad": {"enabled": True, "params": {"max_norm": 0.01}}})
    cfg.optimizer = L(torch.optim.SGD)(params=cfg.optimizer.params, lr=1.0)
    cfg.optimizer.params.base_lr = 1.0
    do_train(cfg)
    init, final = ToyModel().state_dict(), torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    delta = torch.cat([(final[k] - init[k]).flatten() for k in ("backbone.weight", "backbone.bias",
                                                                   "head.weight", "head.bias")])
    assert delta.norm() == pytest.approx(0.01, rel=1e-3)  # lr 1 x clipped grad of norm 0.01
    rows = read_metrics(tmp_path)
    assert rows[0]["grad_norm"] > 0.01  # the logged norm is the pre-clipping one


def test_non_finite_loss_names_iteration_and_term(tmp_path):
    cfg = make_cfg(tmp_path, max_iter=5)
    cfg.model.nan_at_call = 2
    with pytest.raises(FloatingPointError, match=r"iteration 2 .*loss_mse=nan"):
        do_train(cfg)


def test_ema_checkpoint_and_eval_only_with_ema(tmp_path):
    ema_cfg = {"model_ema": {"enabled": True, "decay": 0.5, "use_ema_weights_for_eval_only": True}}
    do_train(make_cfg(tmp_path / "t", max_iter=4, **ema_cfg))
    ckpt = torch.load(tmp_path / "t" / "model_final.pth", weights_only=False)
    assert "ema_state" in ckpt and set(ckpt["ema_state"]) >= {"backbone.weight", "head.bias"}
    assert not torch.equal(ckpt["ema_state"]["head.weight"], ckpt["model"]["head.weight"])
    rows = read_metrics(tmp_path / "t")
    assert "toy/mse" in rows[-1] and "toy_ema/mse" in rows[-1]
    path = str(tmp_path / "t" / "model_final.pth")
    ema_ret = do_eval_only(make_cfg(tmp_path / "e", init_checkpoint=path, **ema_cfg))
    raw_ret = do_eval_only(make_cfg(tmp_path / "r", init_checkpoint=path))
    assert ema_ret["toy"]["mse"] == pytest.approx(rows[-1]["toy_ema/mse"], rel=1e-6)
    assert raw_ret["toy"]["mse"] == pytest.approx(rows[-1]["toy/mse"], rel=1e-6)


def test_amp_on_cpu_uses_bf16_autocast(tmp_path):
    cfg = make_cfg(tmp_path, max_iter=2, **{"amp": {"enabled": True}})
    model = ToyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert type(build_trainer(cfg, model, ToyTrainLoader(), opt, torch.device("cpu"))) is L2GCPUAutocastTrainer
    assert type(build_trainer(make_cfg(tmp_path), model, ToyTrainLoader(), opt, torch.device("cpu"))) \
        is L2GSimpleTrainer

    seen = []

    class Probe(ToyModel):
        def forward(self, batch):
            out = super().forward(batch)
            if self.training:
                seen.append(self.head(torch.zeros(1, 8)).dtype)
            return out

    cfg.model = L(Probe)()
    trainer = do_train(cfg)
    assert isinstance(trainer, L2GCPUAutocastTrainer) and seen == [torch.bfloat16] * 2
    rows = [r for r in read_metrics(tmp_path) if "total_loss" in r]
    assert [r["iteration"] for r in rows] == [0, 1] and all(r["loss_mse"] == r["loss_mse"] for r in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="train.device='cuda'.*train.device=cpu"):
        do_train(make_cfg(tmp_path, device="cuda"))


def test_fast_dev_run(tmp_path):
    from local2global.engine.trainer import apply_fast_dev_run

    cfg = make_cfg(tmp_path, max_iter=1000, **{"fast_dev_run": {"enabled": True}})
    apply_fast_dev_run(cfg)
    assert (cfg.train.max_iter, cfg.train.eval_period, cfg.train.log_period) == (20, 10, 1)

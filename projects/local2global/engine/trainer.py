"""Training and evaluation loops for LazyConfig files (used by ``scripts/train_net.py``).

Built on detectron2: ``SimpleTrainer`` on CPU, ``AMPTrainer`` on CUDA when ``train.amp.enabled`` (detectron2's
``AMPTrainer`` asserts CUDA, SPEC §7; on CPU it is a bf16-autocast step of its own), the standard hooks (IterationTimer,
LRScheduler, PeriodicCheckpointer, EvalHook, PeriodicWriter with CommonMetricPrinter (console, ETA), JSONWriter
(``metrics.json``) and TensorboardXWriter), :class:`~local2global.modeling.checkpoint.Local2GlobalCheckpointer`
(a ``DetectionCheckpointer`` that also loads detrex MaskDINO checkpoints) and ``inference_on_dataset``.

Mixed precision (``train.amp``): ``enabled`` (detrex's key), plus two keys of this project whose defaults are set
here when a config lacks them (:data:`AMP_DEFAULTS`):

* ``precision``: ``"fp16"`` or ``"bf16"`` (``None``: fp16 on CUDA as detectron2's ``AMPTrainer``, bf16 on CPU).
  fp16 runs with a ``GradScaler``; bf16 has fp32's exponent range and runs without one (the scaler is disabled,
  so ``train.clip_grad`` sees true gradients and checkpoints keep no scale). bf16 on CUDA needs an Ampere or
  newer GPU.
* ``tf32``: ``True`` / ``False`` allows / forbids TF32 tensor cores for CUDA float32 matmuls and cuDNN
  convolutions, in training and evaluation (``None``: PyTorch's defaults; see
  :func:`~local2global.engine.device.configure_tf32`). Independent of ``enabled``.

What stays fp32 under autocast, whatever the precision: the pixel encoder (``MaskDINOEncoder.forward_features``:
the deformable encoder and the FPN), every :class:`~local2global.layers.ms_deform_attn.MultiScaleDeformableAttention`
(also the decoder's cross-attention; deformable sampling in half precision loses the sub-pixel offsets), each
decoder layer (detrex's ``@autocast(enabled=False)``), and the matcher's mask costs; the backbone, the aligner,
the heads and the losses run in the autocast dtype.

The ``train`` keys read here are detrex's (``configs/common/train.py``): ``output_dir``, ``init_checkpoint``,
``max_iter``, ``amp.enabled``, ``ddp`` (kwargs of ``create_ddp_model``), ``clip_grad`` (``enabled``,
``params.max_norm``, ``params.norm_type``), ``model_ema`` (``enabled``, ``decay``, ``device``,
``use_ema_weights_for_eval_only``), ``fast_dev_run.enabled``, ``checkpointer`` (``period``, ``max_to_keep``),
``eval_period``, ``log_period``, ``wandb``, ``seed``, ``device``; plus ``train.trainable_params`` (applied by the
optimizer's parameter function, :mod:`local2global.engine.optim`, so that other tools apply it too).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Dict, Mapping, Optional

import torch
from detectron2.config import instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.engine.train_loop import HookBase
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter, \
    get_event_storage
from detectron2.utils.file_io import PathManager

from .device import configure_tf32, resolve_amp_dtype, resolve_device
from .ema import EMAHook, EMAState
from .extensions import build_extra_hooks, checkpoint_save_callback
from .resume_hooks import DeterministicStepHook, MetricHistoryHook
from .freeze import count_parameters, freeze_unused_in_image_mode

__all__ = [
    "L2GSimpleTrainer",
    "L2GAMPTrainer",
    "L2GCPUAutocastTrainer",
    "GradientClipHook",
    "build_trainer",
    "AMP_DEFAULTS",
    "build_checkpointer",
    "build_writers",
    "apply_fast_dev_run",
    "do_test",
    "do_train",
    "do_eval_only",
    "training_started",
]

logger = logging.getLogger(__name__)


def _get(cfg, dotted: str, default=None):
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, dotted, default=default)
    return default if value is None else value


class _FiniteLossMixin:
    """Stops training at the first non-finite loss term, naming the iteration and the term(s).

    The check runs on every process before the optimizer step (detectron2's own check only runs on the main
    process, after gathering, on the summed loss).
    """

    def _write_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float, prefix: str = "",
                       iter: Optional[int] = None) -> None:
        it = self.iter if iter is None else iter
        if loss_dict:
            values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
            if not bool(torch.isfinite(values).all()):
                bad = {k: float(v) for k, v in zip(loss_dict.keys(), values.cpu()) if not torch.isfinite(v)}
                raise FloatingPointError(
                    f"Loss became non-finite at iteration {it} (rank {comm.get_rank()}): "
                    + ", ".join(f"{k}={v}" for k, v in bad.items())
                    + f". All terms: { {k: round(float(v), 6) for k, v in zip(loss_dict.keys(), values.cpu())} }"
                )
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class L2GSimpleTrainer(_FiniteLossMixin, SimpleTrainer):
    """detectron2 ``SimpleTrainer`` with a per-term non-finite loss check."""


class L2GAMPTrainer(_FiniteLossMixin, AMPTrainer):
    """detectron2 ``AMPTrainer`` (CUDA only) with a per-term non-finite loss check."""


#: Defaults of the ``train.amp`` keys this project adds to detrex's ``amp.enabled`` (module docstring).
AMP_DEFAULTS = {"precision": None, "tf32": None}


class L2GCPUAutocastTrainer(L2GSimpleTrainer):
    """``train.amp.enabled`` on CPU: the forward pass under ``torch.autocast("cpu", bfloat16)`` (no grad scaler:
    bf16 has fp32's range); backward, clipping hooks, metrics and the step as ``SimpleTrainer`` (SPEC §7)."""

    def run_step(self):
        assert self.model.training, "[L2GCPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses, loss_dict = loss_dict, {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


class GradientClipHook(HookBase):
    """Clip the gradient norm after backward, before the optimizer step (detrex's ``train.clip_grad``).

    With AMP the gradients are unscaled first (``GradScaler.unscale_``), so ``max_norm`` is in true units.
    Logs the pre-clipping total norm as ``grad_norm``.

    Args:
        max_norm: ``torch.nn.utils.clip_grad_norm_``'s ``max_norm``.
        norm_type: its ``norm_type``.
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0):
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)

    def after_backward(self):
        scaler = getattr(self.trainer, "grad_scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(self.trainer.optimizer)
        params = [p for p in self.trainer.model.parameters() if p.requires_grad and p.grad is not None]
        if not params:
            return
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=self.max_norm, norm_type=self.norm_type)
        get_event_storage().put_scalar("grad_norm", float(norm), smoothing_hint=True)


class _WandbWriter(EventWriter):
    """Minimal Weights & Biases writer for ``train.wandb.enabled`` (detrex's ``params``: dir, project, name)."""

    def __init__(self, params: Mapping, config: Optional[dict] = None, window_size: int = 20):
        import wandb  # noqa: WPS433 - optional dependency

        self._wandb = wandb
        self._run = wandb.init(**dict(params), config=config)
        self._window_size = window_size

    def write(self):
        storage = get_event_storage()
        stats = {k: v for k, (v, _) in storage.latest_with_smoothing_hint(self._window_size).items()}
        self._wandb.log(stats, step=storage.iter)

    def close(self):
        self._run.finish()


def build_writers(cfg) -> list:
    """CommonMetricPrinter (console with ETA), JSONWriter, TensorboardXWriter (+ wandb when enabled)."""
    output_dir = cfg.train.output_dir
    PathManager.mkdirs(output_dir)
    writers = [
        CommonMetricPrinter(cfg.train.max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]
    if _get(cfg, "train.wandb.enabled", False):
        try:
            params = dict(_get(cfg, "train.wandb.params", {}))
        except TypeError:
            params = {}
        if params.get("dir"):
            PathManager.mkdirs(params["dir"])
        try:
            writers.append(_WandbWriter(params))
        except ImportError as e:
            raise RuntimeError("train.wandb.enabled=True but the 'wandb' package is not installed") from e
    return writers


def apply_fast_dev_run(cfg) -> None:
    """detrex's ``train.fast_dev_run``: 20 iterations, evaluation at 10, log every iteration."""
    if _get(cfg, "train.fast_dev_run.enabled", False):
        cfg.train.max_iter = 20
        cfg.train.eval_period = 10
        cfg.train.log_period = 1
        logger.info("train.fast_dev_run.enabled: max_iter=20, eval_period=10, log_period=1")


def build_trainer(cfg, model, data_loader, optimizer, device: torch.device):
    """``L2GAMPTrainer`` for ``train.amp.enabled`` on CUDA (``train.amp.precision``: fp16 with a grad scaler, or
    bf16 without), ``L2GCPUAutocastTrainer`` (bf16) for it on CPU, else ``L2GSimpleTrainer``."""
    amp = bool(_get(cfg, "train.amp.enabled", False))
    precision = _get(cfg, "train.amp.precision", AMP_DEFAULTS["precision"])
    if amp and device.type == "cuda":
        dtype = resolve_amp_dtype(precision, device)
        # bf16 has fp32's exponent range: no loss scaling (a disabled scaler is a pass-through in AMPTrainer).
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        logger.info("train.amp.enabled on CUDA: %s autocast%s", dtype, " with a GradScaler"
                    if dtype == torch.float16 else " without loss scaling")
        return L2GAMPTrainer(model, data_loader, optimizer, grad_scaler=scaler, precision=dtype)
    if amp and device.type == "cpu":
        resolve_amp_dtype(precision, device)  # rejects fp16 on CPU with a clear message
        logger.info("train.amp.enabled on CPU: bf16 autocast forward (detectron2's AMPTrainer needs CUDA)")
        return L2GCPUAutocastTrainer(model, data_loader, optimizer)
    if amp:
        logger.warning("train.amp.enabled=True is not supported on %s; training in fp32", device)
    return L2GSimpleTrainer(model, data_loader, optimizer)


def build_checkpointer(model, output_dir: Optional[str] = None, **checkpointables):
    """``Local2GlobalCheckpointer`` (detrex MaskDINO key mapping) or detectron2's if the model package is absent."""
    try:
        from local2global.modeling.checkpoint import Local2GlobalCheckpointer as Checkpointer
    except ImportError:  # pragma: no cover - the modeling package ships with this one
        from detectron2.checkpoint import DetectionCheckpointer as Checkpointer
    return Checkpointer(model, output_dir or "", **checkpointables)


def _build_ema(cfg) -> Optional[EMAState]:
    if not _get(cfg, "train.model_ema.enabled", False):
        return None
    return EMAState(decay=_get(cfg, "train.model_ema.decay", 0.999), device=_get(cfg, "train.model_ema.device", ""))


def do_test(cfg, model, ema: Optional[EMAState] = None, use_ema_only: bool = False) -> Dict:
    """Run ``inference_on_dataset`` on ``dataloader.test`` with ``dataloader.evaluator`` (if configured).

    With an EMA state: ``use_ema_only`` evaluates the EMA weights only; otherwise the raw weights and then the
    EMA weights (their results under ``<task>_ema`` keys).
    """
    if "evaluator" not in cfg.dataloader or cfg.dataloader.evaluator is None:
        logger.info("No dataloader.evaluator in the config: skipping evaluation")
        return {}

    def run():
        ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
        if comm.is_main_process() and ret:
            print_csv_format(ret)
        return ret or {}

    if ema is not None and use_ema_only:
        logger.info("Evaluating with the EMA weights")
        with ema.applied(model):
            return run()
    ret = dict(run())
    if ema is not None and ema.state:
        logger.info("Evaluating with the EMA weights")
        with ema.applied(model):
            ret.update({f"{k}_ema": v for k, v in run().items()})
    return ret


def _prepare_model(cfg):
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        configure_tf32(_get(cfg, "train.amp.tf32", AMP_DEFAULTS["tf32"]))
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(device)
    return model, device


def _ddp_kwargs(cfg, device: torch.device) -> dict:
    kwargs = dict(_get(cfg, "train.ddp", {}) or {})
    if device.type == "cpu":
        kwargs["device_ids"] = None  # gloo on CPU: DDP must not be given device ids (SPEC §7)
    return kwargs


_TRAINING_STARTED = [False]


def training_started() -> bool:
    """Whether the last :func:`do_train` of this process got as far as its first iteration (for
    ``scripts/train_net.py``, which restores the previous ``config.yaml`` of a run that failed before that)."""
    return _TRAINING_STARTED[0]


def do_train(cfg, resume: bool = False):
    """Train ``cfg.model`` as configured; returns the trainer (after training)."""
    _TRAINING_STARTED[0] = False
    model, device = _prepare_model(cfg)
    # image-mode warm-ups: parameters the first frame does not use would break DDP (find_unused_parameters=False)
    freeze_unused_in_image_mode(model, _get(cfg, "dataloader.train.mapper.num_frames", None))
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise ValueError("no trainable parameter (check train.trainable_params)")
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **_ddp_kwargs(cfg, device))

    ema = _build_ema(cfg)
    trainer = build_trainer(cfg, model, train_loader, optimizer, device)
    checkpointables = {"trainer": trainer}
    if ema is not None:
        checkpointables["ema_state"] = ema
    checkpointer = build_checkpointer(model, cfg.train.output_dir, **checkpointables)
    checkpointer.before_replace = checkpoint_save_callback()  # registered callbacks (extensions.py), or None

    clip = _get(cfg, "train.clip_grad", None)
    clip_hook = None
    if clip is not None and clip.get("enabled", False):
        params = clip.get("params", {}) or {}
        clip_hook = GradientClipHook(max_norm=params.get("max_norm", 0.1), norm_type=params.get("norm_type", 2))

    ckpt_cfg = dict(_get(cfg, "train.checkpointer", {}) or {})
    seed = int(_get(cfg, "train.seed", -1))
    trainer.register_hooks([
        # every random draw of step i is a function of (train.seed, i, rank): resumed runs repeat them exactly
        DeterministicStepHook(seed, model) if seed >= 0 else None,
        hooks.IterationTimer(),
        MetricHistoryHook(),  # smoothed metrics continue across --resume
        clip_hook,
        EMAHook(ema, model) if ema is not None else None,
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **ckpt_cfg) if comm.is_main_process() else None,
        # eval_period < 0: no evaluation at all (e.g. a warm-up stage whose model is evaluated elsewhere)
        hooks.EvalHook(_get(cfg, "train.eval_period", 0), lambda: do_test(cfg, model, ema))
        if _get(cfg, "train.eval_period", 0) >= 0 else None,
        hooks.PeriodicWriter(build_writers(cfg), period=_get(cfg, "train.log_period", 20))
        if comm.is_main_process() else None,
        *build_extra_hooks(model),  # registered through local2global.engine.extensions; run last
    ])

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    if resume and checkpointer.has_checkpoint():
        # the checkpoint stores the iteration that just finished: continue at the next one
        start_iter = trainer.iter + 1
    else:
        start_iter = 0
    # continue the sample stream where the stopped run was (detectron2's sampler would restart it)
    from local2global.data.build import set_train_loader_start_iter

    if start_iter and not set_train_loader_start_iter(train_loader, start_iter):
        logger.warning("the train loader is not resumable: --resume restarts its sample stream")
    # create the loader's iterator now: torch's DataLoader draws its base seed from torch's global generator
    # when the iterator is created, which inside the first step would shift that step's random draws
    trainer._data_loader_iter  # noqa: B018 - property with a side effect
    logger.info("Training on %s from iteration %d to %d", device, start_iter, cfg.train.max_iter)
    _TRAINING_STARTED[0] = True
    trainer.train(start_iter, cfg.train.max_iter)
    return trainer


def do_eval_only(cfg) -> Dict:
    """Load ``train.init_checkpoint`` into ``cfg.model`` and evaluate; writes ``eval_results.json`` too."""
    model, device = _prepare_model(cfg)
    model = create_ddp_model(model, **_ddp_kwargs(cfg, device))
    ema = _build_ema(cfg)
    extra = {"ema_state": ema} if ema is not None else {}
    checkpointer = build_checkpointer(model, cfg.train.output_dir, **extra)
    if not cfg.train.init_checkpoint:
        logger.warning("--eval-only without train.init_checkpoint: evaluating randomly initialised weights")
    checkpointer.load(cfg.train.init_checkpoint)
    use_ema = ema is not None and bool(_get(cfg, "train.model_ema.use_ema_weights_for_eval_only", False))
    if ema is not None and not ema.state:
        logger.warning("train.model_ema.enabled but the checkpoint has no 'ema_state': evaluating raw weights")
        ema = None
    ret = do_test(cfg, model, ema=ema if use_ema else None, use_ema_only=use_ema)
    if comm.is_main_process() and cfg.train.output_dir:
        import json

        PathManager.mkdirs(cfg.train.output_dir)
        path = os.path.join(cfg.train.output_dir, "eval_results.json")
        with PathManager.open(path + ".tmp", "w") as f:
            json.dump(_jsonable(ret), f, indent=2)
        os.replace(path + ".tmp", path)
        logger.info("Wrote %s", path)
    return ret


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)

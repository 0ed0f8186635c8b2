#!/usr/bin/env python
"""A stand-in for detectron2's ``tools/lazyconfig_train_net.py`` (which the installed detectron2 does not ship).

It does what that tool does with a LazyConfig, through detectron2's public API only and without anything of
``local2global`` beyond what the config file itself imports: ``LazyConfig.load``, ``LazyConfig.apply_overrides``
(detectron2's, not the project's strict overrides), ``default_setup``, ``instantiate(cfg.model)`` moved to
``cfg.train.device``, ``cfg.optimizer.params.model = model`` and ``instantiate(cfg.optimizer)``,
``instantiate(cfg.dataloader.train)``, ``create_ddp_model(model, **cfg.train.ddp)``, a ``SimpleTrainer`` /
``AMPTrainer`` (``cfg.train.amp.enabled``) with detectron2's hooks (``LRScheduler(instantiate(cfg.lr_multiplier))``,
``PeriodicCheckpointer(**cfg.train.checkpointer)``, ``EvalHook(cfg.train.eval_period)`` running
``inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))`` and
``PeriodicWriter(default_writers(...), cfg.train.log_period)``), a plain ``DetectionCheckpointer``
``resume_or_load(cfg.train.init_checkpoint)`` and ``trainer.train(start, cfg.train.max_iter)``; ``--eval-only``
loads ``cfg.train.init_checkpoint`` and evaluates. Used by ``tests/test_train_net.py`` when
``$L2G_D2_LAZYCONFIG_TOOL`` does not point at a copy of the real tool.
"""

import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

logger = logging.getLogger("detectron2")


def evaluate(cfg, model):
    """``inference_on_dataset`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator`` (when the config has one)."""
    if "evaluator" not in cfg.dataloader:
        return None
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def train(args, cfg) -> None:
    """Build everything from the config and run ``cfg.train.max_iter`` iterations with detectron2's hooks."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer_cls = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
    trainer = trainer_cls(model, loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    main = comm.is_main_process()
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: evaluate(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period) if main else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start, cfg.train.max_iter)


def main(args) -> None:
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        print(evaluate(cfg, model))
    else:
        train(args, cfg)


if __name__ == "__main__":
    parsed = default_argument_parser().parse_args()
    launch(main, parsed.num_gpus, num_machines=parsed.num_machines, machine_rank=parsed.machine_rank,
           dist_url=parsed.dist_url, args=(parsed,))

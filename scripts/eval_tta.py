#!/usr/bin/env python
"""Evaluate a Local2Global LazyConfig with IFR's online multi-scale test-time augmentation.

``scripts/train_net.py --eval-only`` with the model wrapped in
:class:`~local2global.inference.tta.MultiScaleTTA` (every frame at every scale in lockstep, one model state per
scale, slots matched once to the pivot scale, class and mask probabilities averaged per frame)::

    python scripts/eval_tta.py --config-file configs/local2global_r50_ytvis19.py --tta-scales 288,360,432 \\
        train.init_checkpoint=output/local2global_r50_ytvis19/model_final.pth

Same arguments as ``train_net.py`` (``--num-gpus``, trailing strict ``key=value`` overrides, ...) plus the
``--tta-*`` flags; writes ``eval_results_tta.json`` to ``train.output_dir``. A separate script rather than a flag of
``train_net.py`` or a config key: TTA is an evaluation of a trained checkpoint, never part of a training run, and the
wrapper must not become ``cfg.model`` (its parameters would be renamed ``model.*`` in checkpoints).
"""

from __future__ import annotations

import json
import logging
import os
import sys


import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from local2global.engine.device import resolve_device  # noqa: E402
from local2global.engine.overrides import ConfigError, OverrideError, apply_overrides_strict, check_config  # noqa: E402
from local2global.engine.trainer import build_checkpointer, do_test  # noqa: E402
from local2global.inference.tta import MultiScaleTTA, parse_scales  # noqa: E402

logger = logging.getLogger("local2global.eval_tta")

RESULTS_FILE = "eval_results_tta.json"


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--tta-scales", required=True, type=parse_scales,
                        help="comma-separated shortest-edge lengths, e.g. 288,360,432")
    parser.add_argument("--tta-pivot", type=int, default=None,
                        help="index in --tta-scales of the pivot scale (default: the middle entry)")
    parser.add_argument("--tta-max-size", type=int, default=None, help="cap of the long edge (default: none)")
    parser.add_argument("--tta-match-threshold", type=float, default=None,
                        help="class probability at which a pivot slot is matched (default: the post-processor's "
                             "frame_score_threshold)")
    return parser


def main(args) -> dict:
    cfg = LazyConfig.load(args.config_file)
    cfg = apply_overrides_strict(cfg, args.opts)
    check_config(cfg, f"config {args.config_file!r}")
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="local2global", abbrev_name="l2g")
    model = instantiate(cfg.model).to(resolve_device(cfg.train.device))
    if not cfg.train.init_checkpoint:
        logger.warning("no train.init_checkpoint: evaluating randomly initialised weights")
    build_checkpointer(model, cfg.train.output_dir).load(cfg.train.init_checkpoint)
    tta = MultiScaleTTA(model, args.tta_scales, pivot=args.tta_pivot, max_size=args.tta_max_size,
                        match_threshold=args.tta_match_threshold)
    logger.info("Evaluating with test-time augmentation: %s", tta.extra_repr())
    ret = do_test(cfg, tta)
    if comm.is_main_process() and cfg.train.output_dir:
        os.makedirs(cfg.train.output_dir, exist_ok=True)
        path = os.path.join(cfg.train.output_dir, RESULTS_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump({"tta": {"scales": list(tta.scales), "pivot": tta.pivot}, "results": _jsonable(ret)}, f,
                      indent=2)
        os.replace(path + ".tmp", path)
        logger.info("Wrote %s", path)
    return ret


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else float(obj)


def invoke_main() -> None:
    args = build_parser().parse_args()
    try:
        check_config(apply_overrides_strict(LazyConfig.load(args.config_file), args.opts),
                     f"config {args.config_file!r}")
    except (OverrideError, ConfigError) as e:
        sys.exit(f"eval_tta.py: error: {e}")
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    invoke_main()

"""Train or evaluate a Local2Global LazyConfig: the command line of detectron2's ``tools/lazyconfig_train_net.py``.

Console entry points (``pyproject.toml``) and the script that delegates here::

    l2g-train --config-file configs/local2global_tiny_synthetic.py train.max_iter=100
    l2g-train --config-file configs/local2global_r50_ytvis19.py --num-gpus 8
    l2g-train --config-file ... --resume                        # continue from last_checkpoint
    l2g-eval  --config-file ... train.init_checkpoint=output/model_final.pth   # = l2g-train --eval-only
    python scripts/train_net.py ...                             # the same as l2g-train
    # training-free recipes (train.eval_only=True, e.g. configs/trackers/minvis_*.py) evaluate without the flag
    # two machines: --num-machines 2 --machine-rank {0,1} --dist-url tcp://<host of rank 0>:<port>

Trailing ``key=value`` overrides are checked by :func:`local2global.engine.overrides.apply_overrides_strict`:
a key that does not exist is an error (``null`` is None). ``--num-gpus N`` on a machine without a GPU starts N
CPU processes (gloo). Outputs go to ``train.output_dir``: ``config.yaml``, ``log.txt``, ``metrics.json``,
TensorBoard events, ``model_XXXXXXX.pth`` / ``model_final.pth`` / ``last_checkpoint`` and the evaluator's files.

A checkpoint that cannot be read (:class:`local2global.modeling.checkpoint.CheckpointFileError`) ends the command
with one line naming the file and a non-zero exit; ``--debug`` (or ``L2G_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional, Sequence

import torch
from detectron2.config import LazyConfig
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from local2global.cli import BAD_FILE_EXIT_STATUS, DEBUG_ENV, debug_requested, prog_name
from local2global.engine.overrides import ConfigError, OverrideError, apply_overrides_strict, check_config
from local2global.engine.trainer import apply_fast_dev_run, do_eval_only, do_train, training_started
from local2global.modeling.checkpoint import CheckpointFileError

__all__ = ["main", "worker_main", "build_parser", "run", "train_cli", "eval_cli"]

logger = logging.getLogger("local2global.train_net")


def main(args) -> dict:
    """Load the config, apply overrides, set up logging / output dir, train or evaluate.

    A run that fails before its first iteration (a checkpoint of another architecture, a dataset that does not
    exist, ...) puts the output folder's previous ``config.yaml`` back, so that it still describes the
    checkpoints there.

    Args:
        args: the parsed command line of :func:`build_parser`.

    Returns:
        The evaluation results of an evaluation-only run, else ``{}``.
    """
    previous_config = None
    try:
        cfg = LazyConfig.load(args.config_file)
        cfg = apply_overrides_strict(cfg, args.opts)
        check_config(cfg, f"config {args.config_file!r}")  # before default_setup writes to train.output_dir
        apply_fast_dev_run(cfg)
        config_path = os.path.join(cfg.train.output_dir or "", "config.yaml")
        if cfg.train.output_dir and comm.is_main_process() and os.path.isfile(config_path):
            with open(config_path, "rb") as f:
                previous_config = f.read()
        default_setup(cfg, args)
        # detectron2's default_setup configures the "detectron2" and "fvcore" loggers; add this package's
        setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="local2global", abbrev_name="l2g")
        try:
            if args.eval_only or bool(cfg.train.get("eval_only", False)):
                if not args.eval_only:
                    logger.info("train.eval_only=True (a training-free recipe): evaluating train.init_checkpoint")
                return do_eval_only(cfg)
            do_train(cfg, resume=args.resume)
        except BaseException:
            if previous_config is not None and (args.eval_only or cfg.train.get("eval_only", False)
                                                or not training_started()):
                with open(config_path + ".tmp", "wb") as f:
                    f.write(previous_config)
                os.replace(config_path + ".tmp", config_path)
                logger.error("the run failed before training: restored the previous %s", config_path)
            raise
        return {}
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # without it a CPU (gloo) worker sometimes aborts at exit (SPEC §7)
            torch.distributed.destroy_process_group()


def worker_main(args) -> dict:
    """What ``launch`` runs in each process: :func:`main`, then, in a multi-process job, a hard exit on success.

    With gloo on CPU, a worker that finished cleanly (process group destroyed) still aborts now and then while
    Python tears down (``terminate called without an active exception`` from a C++ thread destroyed while
    joinable: seen in CI after a 2-process run), which turns a successful job into a failed one. A worker that
    returned normally therefore flushes its logs and leaves with ``os._exit(0)``; a failing worker raises as
    before, so the job still exits non-zero.
    """
    try:
        result = main(args)
    except CheckpointFileError as e:
        if debug_requested(args.debug) or args.num_gpus * args.num_machines > 1:
            raise
        # one line naming the file (the checkpointer's message), no traceback
        logging.shutdown()
        print(f"{prog_name('l2g-train')}: error: {e}", file=sys.stderr)
        sys.exit(BAD_FILE_EXIT_STATUS)
    if args.num_gpus * args.num_machines > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return result


def build_parser():
    """detectron2's ``default_argument_parser`` plus ``--debug`` (tracebacks for bad-file errors)."""
    parser = default_argument_parser()
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of bad-file errors (also: {DEBUG_ENV}=1)")
    return parser


def run(argv: Optional[Sequence[str]] = None, force_eval_only: bool = False) -> None:
    """Parse ``argv``, check the config and overrides once, then ``launch`` :func:`worker_main`.

    Args:
        argv: the command line without the program name (default ``sys.argv[1:]``).
        force_eval_only: set ``--eval-only`` (the ``l2g-eval`` command).

    Raises:
        SystemExit: with a one-line message for a bad override or config (before any process is started).
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if not args.config_file:
        parser.error("--config-file is required")
    if force_eval_only:
        args.eval_only = True
    if not os.path.isfile(args.config_file):
        print(f"{prog_name('l2g-train')}: error: config file {args.config_file!r} does not exist", file=sys.stderr)
        sys.exit(BAD_FILE_EXIT_STATUS)
    # check the overrides once, before any process is started (a typo should not spawn N workers to fail)
    try:
        check_config(apply_overrides_strict(LazyConfig.load(args.config_file), args.opts),
                     f"config {args.config_file!r}")
    except (OverrideError, ConfigError) as e:
        sys.exit(f"{prog_name('l2g-train')}: error: {e}")
    if args.num_gpus > 1 and not torch.cuda.is_available():
        logger.info("No CUDA: --num-gpus %d starts %d CPU processes (gloo)", args.num_gpus, args.num_gpus)
    launch(
        worker_main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


def train_cli(argv: Optional[List[str]] = None) -> None:
    """``l2g-train``: train (or with ``--eval-only`` evaluate) a config."""
    run(argv)


def eval_cli(argv: Optional[List[str]] = None) -> None:
    """``l2g-eval``: evaluate ``train.init_checkpoint`` of a config (``l2g-train --eval-only``)."""
    run(argv, force_eval_only=True)

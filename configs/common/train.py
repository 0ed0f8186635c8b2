"""Training options read by ``scripts/train_net.py``, detectron2's ``tools/lazyconfig_train_net.py`` and detrex's
``tools/train_net.py`` (detrex's ``configs/common/train.py`` key set and meaning, plus ``trainable_params``).
"""

train = dict(
    # directory where config.yaml, log.txt, metrics.json, TensorBoard events and checkpoints are written
    output_dir="./output/local2global",
    # weights loaded before training (a detrex MaskDINO checkpoint, a phase-1 output, a detectron2 .pkl);
    # with --resume, the last checkpoint in output_dir wins
    init_checkpoint="",
    # total training iterations (lr milestones are fractions of it, configs/common/schedule.py)
    max_iter=90000,
    # mixed precision: enabled (detrex's key); precision "fp16" (GradScaler) / "bf16" (no scaler) / None (fp16 on
    # CUDA, bf16 on CPU); tf32 True / False / None (TF32 for CUDA matmuls and cuDNN; None: PyTorch's defaults).
    # The pixel encoder, deformable attention, decoder layers and matcher mask costs stay fp32 (engine/trainer.py)
    amp=dict(enabled=False, precision=None, tf32=None),
    # kwargs of detectron2's create_ddp_model / torch DistributedDataParallel
    # (scripts/train_net.py passes device_ids=None on CPU, where gloo is used)
    ddp=dict(
        broadcast_buffers=False,
        find_unused_parameters=False,
        fp16_compression=False,
    ),
    # gradient-norm clipping (torch.nn.utils.clip_grad_norm_ of the trainable parameters)
    clip_grad=dict(
        enabled=False,
        params=dict(
            max_norm=0.1,
            norm_type=2,
        ),
    ),
    # seed of every process (+ rank); -1: random (read by detectron2's default_setup)
    seed=-1,
    # detrex's fast debugging: 20 iterations, evaluation at 10, log every iteration
    fast_dev_run=dict(enabled=False),
    # PeriodicCheckpointer: a checkpoint every `period` iterations, keeping `max_to_keep`
    checkpointer=dict(period=5000, max_to_keep=100),
    # evaluation on dataloader.test every `eval_period` iterations (0: only at the end; < 0: never)
    eval_period=5000,
    # console / metrics.json / TensorBoard every `log_period` iterations
    log_period=20,
    # Weights & Biases (detrex: only its own train_net.py adds the writer; scripts/train_net.py does too)
    wandb=dict(
        enabled=False,
        params=dict(
            dir="./wandb_output",
            project="local2global",
            name="local2global_experiment",
        ),
    ),
    # model EMA (detrex's keys); the EMA weights are saved in checkpoints as "ema_state".
    # device follows train.device (detrex's EMAHook falls back to cfg.model.device, which this model has not)
    model_ema=dict(
        enabled=False,
        decay=0.999,
        device="${..device}",
        use_ema_weights_for_eval_only=False,
    ),
    # fnmatch patterns of the parameters to train ("aligner.*", ...); None: the model's own setting.
    # Applied by the optimizer's parameter function (configs/common/optim.py), so every tool honours it.
    trainable_params=None,
    # True: the recipe is training-free (e.g. MinVIS on a given segmenter checkpoint): scripts/train_net.py and
    # scripts/sweep.py evaluate train.init_checkpoint as with --eval-only
    eval_only=False,
    # "cuda" or "cpu"; configs that must run anywhere use "${l2g_device:}" (local2global.engine.device)
    device="cuda",
)

#!/usr/bin/env python
"""Convert a detrex MaskDINO checkpoint to Local2Global key names.

    python scripts/convert_maskdino_checkpoint.py maskdino_r50_coco.pth l2g_init.pth [--check-config CFG]

Local2Global loads detrex checkpoints directly (``train.init_checkpoint=maskdino.pth``: the model's load hook
renames ``sem_seg_head.pixel_decoder.*`` -> ``pixel_decoder.*`` and ``sem_seg_head.predictor.*`` -> ``decoder.*``);
this script writes the renamed file for tools that load state dicts without that hook, and with
``--check-config`` reports the keys matched / missing / unexpected and shape mismatches against a model config.
"""

import argparse
import os
import sys

import torch

from local2global.modeling.checkpoint import convert_maskdino_state_dict


def compare_with_model(state_dict, config_file, overrides=()):
    """Return (matched, missing, unexpected, shape_mismatch) key lists against the model of a config."""
    from detectron2.config import LazyConfig, instantiate

    from local2global.engine.overrides import apply_overrides_strict

    cfg = apply_overrides_strict(LazyConfig.load(config_file), list(overrides))
    model_sd = instantiate(cfg.model).state_dict()
    matched, shape_mismatch = [], []
    for k, v in state_dict.items():
        if k in model_sd:
            (matched if tuple(model_sd[k].shape) == tuple(v.shape) else shape_mismatch).append(k)
    missing = sorted(set(model_sd) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(model_sd))
    return matched, missing, unexpected, shape_mismatch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--check-config", default=None, help="a Local2Global LazyConfig to compare keys with")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for --check-config")
    args = parser.parse_args(argv)
    ckpt = torch.load(args.src, map_location="cpu", weights_only=False)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    converted = convert_maskdino_state_dict(state)
    tmp = args.dst + ".partial"
    torch.save({"model": converted, "__author__": "local2global.convert_maskdino_checkpoint"}, tmp)
    os.replace(tmp, args.dst)
    print(f"wrote {len(converted)} tensors to {args.dst}")
    if args.check_config:
        matched, missing, unexpected, mismatch = compare_with_model(converted, args.check_config, args.opts)
        print(f"matched {len(matched)}, missing {len(missing)}, unexpected {len(unexpected)}, "
              f"shape mismatch {len(mismatch)}")
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatch)):
            for k in keys:
                print(f"  {name}: {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

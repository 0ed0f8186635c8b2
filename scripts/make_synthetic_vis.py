#!/usr/bin/env python
"""Write the built-in synthetic YouTube-VIS dataset (frames + train.json / valid.json with ground truth, and
the per-video tags train_tags.json / valid_tags.json; see docs/SYNTHETIC.md).

Example::

    python scripts/make_synthetic_vis.py --output datasets/synthetic_vis --seed 0
    python scripts/make_synthetic_vis.py --output /tmp/syn --num-train 4 --num-valid 2 --mask-format polygon
    python scripts/make_synthetic_vis.py --output /tmp/syn_hard --num-train 0 --num-valid 200 --hard
"""

import argparse
import json
import logging
import sys

from local2global.data.synthetic import MASK_FORMATS, SyntheticVISConfig, make_synthetic_vis  # noqa: E402


def main(argv=None) -> int:
    d = SyntheticVISConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="dataset root to create")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-train", type=int, default=d.num_train)
    p.add_argument("--num-valid", type=int, default=d.num_valid)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--min-length", type=int, default=d.min_length)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--num-long", type=int, default=d.num_long, help="extra long train videos")
    p.add_argument("--long-length", type=int, default=d.long_length)
    p.add_argument("--max-objects", type=int, default=d.max_objects)
    p.add_argument("--mask-format", choices=MASK_FORMATS, default=d.mask_format)
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    p.add_argument("--hard", action="store_true",
                   help="hard mode: look-alike crossings, long occlusions, camera jumps, long videos")
    p.add_argument("--no-tags", action="store_true", help="do not write the tags sidecars")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stamp = make_synthetic_vis(
        args.output, overwrite=args.overwrite, seed=args.seed, num_train=args.num_train, num_valid=args.num_valid,
        height=args.height, width=args.width, min_length=args.min_length, max_length=args.max_length,
        num_long=args.num_long, long_length=args.long_length, max_objects=args.max_objects,
        mask_format=args.mask_format, jpeg_quality=args.jpeg_quality, hard=args.hard, write_tags=not args.no_tags,
    )
    print(json.dumps(stamp["stats"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

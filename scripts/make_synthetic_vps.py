#!/usr/bin/env python
"""Write the built-in synthetic video panoptic dataset in VIPSeg's on-disk format (the raw layout ``imgs`` /
``panomasks`` / ``train.txt`` / ``val.txt`` and the converted ``VIPSeg_720P`` layout with its panoptic JSONs; see
docs/SYNTHETIC.md).

Example::

    python scripts/make_synthetic_vps.py --output datasets/synthetic_vps --seed 0
    python scripts/make_synthetic_vps.py --output /tmp/vps200 --num-train 0 --num-valid 200
"""

import argparse
import json
import logging
import sys

from local2global.data.synthetic_vps import SyntheticVPSConfig, make_synthetic_vps

logger = logging.getLogger("local2global.make_synthetic_vps")


def main(argv=None) -> int:
    d = SyntheticVPSConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="dataset root to create")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-train", type=int, default=d.num_train)
    p.add_argument("--num-valid", type=int, default=d.num_valid)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--min-length", type=int, default=d.min_length)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--max-objects", type=int, default=d.max_objects)
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stamp = make_synthetic_vps(
        args.output, overwrite=args.overwrite, seed=args.seed, num_train=args.num_train, num_valid=args.num_valid,
        height=args.height, width=args.width, min_length=args.min_length, max_length=args.max_length,
        max_objects=args.max_objects, jpeg_quality=args.jpeg_quality,
    )
    logger.info("statistics: %s", json.dumps(stamp["stats"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Convert the raw VIPSeg download to the 720p panopticapi-style layout (deterministic segment ids).

    python scripts/convert_vipseg_to_720p.py datasets/VIPSeg [--out datasets/VIPSeg/VIPSeg_720P]
        [--height 720] [--num-workers 2] [--videos a,b,c] [--check]

Replaces the official ``change2_720p.py`` + ``create_panoptic_video_labels.py`` + ``splitjson.py`` (same
outputs; see :mod:`local2global.data.vipseg_convert` for what is kept and what differs: the RGB ids are drawn
from a per-video seeded random state instead of numpy's global one). ``--check`` re-reads every written PNG
against its JSON afterwards.
"""

import argparse
import logging
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("raw_root", help="the VIPSeg folder with imgs/, panomasks/ and train.txt / val.txt")
    ap.add_argument("--out", default=None, help="output folder (default <raw_root>/VIPSeg_720P)")
    ap.add_argument("--height", type=int, default=720, help="output height (default 720, as the official)")
    ap.add_argument("--num-workers", type=int, default=0, help="processes over videos")
    ap.add_argument("--videos", default=None, help="comma-separated video names (default: all with masks)")
    ap.add_argument("--check", action="store_true", help="validate every written PNG against the JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from local2global.data.vipseg import VIPSegFormatError, load_vipseg_panoptic_json
    from local2global.data.vipseg_convert import convert_vipseg_to_720p

    out = args.out or os.path.join(args.raw_root, "VIPSeg_720P")
    t0 = time.perf_counter()
    try:
        written = convert_vipseg_to_720p(args.raw_root, out, args.height,
                                         args.videos.split(",") if args.videos else None, args.num_workers)
        if args.check:
            load_vipseg_panoptic_json(written["all"], os.path.join(out, "images"), os.path.join(out, "panomasksRGB"),
                                      check_masks=True)
    except (VIPSegFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

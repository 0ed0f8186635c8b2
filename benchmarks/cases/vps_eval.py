"""VPQ / STQ against VIPSeg's official scripts: agreement on random videos, and speed / peak memory.

The official scripts are not part of the project: point ``L2G_VPS_OFFICIAL`` at a copy of
``VIPSeg-Dataset/VIPSeg-Dataset``'s ``ClipPanoFCN/`` folder (``eval_vpq_vspw.py``, ``eval_stq_vspw.py``,
``segmentation_and_tracking_quality.py``; commit 92e1459 was used) and ``L2G_VPS_OFFICIAL_PYTHON`` at an
interpreter that runs them (numpy < 1.24 for ``np.bool``, Pillow, tqdm). They are run unchanged, as
subprocesses, on data written by :func:`local2global.evaluation.vps.random_videos.write_random_vps`.

    python -m benchmarks.cases.vps_eval agree --seeds 0:200 --out /tmp/vps_agree.json
    python -m benchmarks.cases.vps_eval speed --videos 20 --frames 12 --height 720 --width 1280
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from typing import Dict, Optional

OFFICIAL_ENV = "L2G_VPS_OFFICIAL"
OFFICIAL_PYTHON_ENV = "L2G_VPS_OFFICIAL_PYTHON"
_FLOAT = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"


def _submit_dir(paths: Dict[str, str]) -> str:
    """The official layout ``<submit>/pred.json`` + ``<submit>/pan_pred/`` (links to the written files)."""
    sub = os.path.join(os.path.dirname(paths["pred_json"]), "submit")
    os.makedirs(sub, exist_ok=True)
    for name, target in (("pred.json", paths["pred_json"]), ("pan_pred", paths["pred_dir"])):
        link = os.path.join(sub, name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(target), link)
    return sub


def _last_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines()
             if ln.strip() and not ln.startswith(("MAXRSS_KB", "Command exited"))]
    return lines[-1] if lines else "?"


def _timed(cmd, cwd) -> dict:
    """Run a command; wall time, peak RSS of the child (and its children), stdout / stderr, exit status."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M"] + cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    m = re.findall(r"MAXRSS_KB (\d+)", proc.stderr)
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr, "seconds": wall,
            "max_rss_mb": int(m[-1]) / 1024 if m else None}


def run_official(paths: Dict[str, str], official_dir: str, python: str, num_processes: int = 1) -> dict:
    """Run both official scripts; the per-window VPQ (full precision, from their stdout) and STQ / AQ / IoU."""
    sub = _submit_dir(paths)
    common = ["--submit_dir", sub, "--truth_dir", os.path.abspath(paths["gt_dir"]),
              "--pan_gt_json_file", os.path.abspath(paths["gt_json"])]
    vpq = _timed([python, "eval_vpq_vspw.py"] + common + ["--num_processes", str(num_processes)], official_dir)
    stq = _timed([python, "eval_stq_vspw.py"] + common, official_dir)
    out = {"vpq_rc": vpq["rc"], "stq_rc": stq["rc"], "vpq_seconds": vpq["seconds"], "stq_seconds": stq["seconds"],
           "vpq_max_rss_mb": vpq["max_rss_mb"], "stq_max_rss_mb": stq["max_rss_mb"]}
    rows = re.findall(rf"^({_FLOAT}) ({_FLOAT}) ({_FLOAT})$", vpq["out"], re.M)
    out["per_window"] = [[float(x) for x in r] for r in rows]  # printed before a crash too
    if vpq["rc"] == 0:
        out["VPQ"], out["VPQ_th"], out["VPQ_st"] = (sum(r[i] for r in out["per_window"]) / len(rows) for i in range(3))
    else:
        out["vpq_error"] = _last_error_line(vpq["err"])
    if stq["rc"] == 0:
        for key, pat in (("STQ", r"STQ : "), ("AQ", r"AQ :"), ("IoU", r"IoU:")):
            out[key] = float(re.search(rf"^{pat}({_FLOAT})", stq["out"], re.M).group(1))
    else:
        out["stq_error"] = _last_error_line(stq["err"])
    return out


def _ours(paths) -> dict:
    from local2global.evaluation.vps.evaluate import evaluate_vps
    from local2global.evaluation.vps.panoptic_io import VPSFormatError

    args = (paths["gt_json"], paths["gt_dir"], paths["pred_json"], paths["pred_dir"])
    try:
        r = evaluate_vps(*args)
    except VPSFormatError as e:
        out = {"error": str(e)}
        try:  # the IoU assertion is VPQ's: STQ is still defined, compare it
            s = evaluate_vps(*args, metrics=["stq"])
            out.update(STQ=s["stq"]["STQ"], AQ=s["stq"]["AQ"], IoU=s["stq"]["IoU"])
        except VPSFormatError:
            pass
        return out
    return {"per_window": [[w[n]["pq"] for n in ("All", "Things", "Stuff")] for w in r["per_window"]],
            "VPQ": r["VPQ"], "VPQ_th": r["VPQ_th"], "VPQ_st": r["VPQ_st"],
            "STQ": r["stq"]["STQ"], "AQ": r["stq"]["AQ"], "IoU": r["stq"]["IoU"]}


def _diff(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b)


def agreement(seeds, root: str, official_dir: str, python: str, corner_every: int = 2) -> dict:
    """Max |ours - official| over random inputs (every ``corner_every``-th seed with the corner cases)."""
    from local2global.evaluation.vps.random_videos import RandomVPSConfig, write_random_vps

    worst = {"vpq": 0.0, "stq": 0.0}
    n_vpq = n_stq = n_rows = 0
    official_errors = []
    for seed in seeds:
        corner = seed % corner_every == 0
        cfg = RandomVPSConfig(num_videos=4, max_frames=12, corner_cases=corner, crowd=corner)
        paths = write_random_vps(os.path.join(root, f"s{seed}"), seed, cfg)
        off = run_official(paths, official_dir, python)
        ours = _ours(paths)
        if "error" in ours:
            both = "VPQ" not in off
            official_errors.append((seed, "ours raised", ours["error"][:200], "official raised too" if both else
                                    "OFFICIAL ACCEPTED"))
            if "STQ" in off and "STQ" in ours:
                n_stq += 1
                worst["stq"] = max([worst["stq"]] + [_diff(off[k], ours[k]) for k in ("STQ", "AQ", "IoU")])
            continue
        n_rows += len(off["per_window"])
        d = max([0.0] + [_diff(x, y) for ro, rr in zip(off["per_window"], ours["per_window"]) for x, y in zip(ro, rr)])
        worst["vpq"] = max(worst["vpq"], d)
        if "VPQ" in off:
            n_vpq += 1
            worst["vpq"] = max([worst["vpq"]] + [_diff(off[k], ours[k]) for k in ("VPQ", "VPQ_th", "VPQ_st")])
        else:
            nan_windows = [i for i, r in enumerate(ours["per_window"]) if any(math.isnan(x) for x in r)]
            official_errors.append((seed, "vpq", off["vpq_error"], f"ours: nan at windows {nan_windows}, official "
                                    f"printed {len(off['per_window'])} windows before failing"))
        if "STQ" in off:
            n_stq += 1
            worst["stq"] = max([worst["stq"]] + [_diff(off[k], ours[k]) for k in ("STQ", "AQ", "IoU")])
        else:
            official_errors.append((seed, "stq", off["stq_error"]))
    return {"inputs": len(list(seeds)), "vpq_compared": n_vpq, "vpq_windows_compared": n_rows,
            "stq_compared": n_stq,
            "max_abs_diff_vpq_percent": worst["vpq"], "max_abs_diff_stq_fraction": worst["stq"],
            "official_errors": official_errors}


def speed(root: str, official_dir: str, python: str, videos: int, frames: int, height: int, width: int,
          num_processes: int) -> dict:
    """Wall time and peak RSS of ours (fresh interpreter) vs the two official scripts on one data set."""
    from local2global.evaluation.vps.random_videos import RandomVPSConfig, write_random_vps

    cfg = RandomVPSConfig(num_videos=videos, min_frames=frames, max_frames=frames, height=height, width=width,
                          num_categories=124, max_segments=40)
    if os.path.isfile(os.path.join(root, "gt.json")):  # written by an earlier call with the same arguments
        paths = {"gt_json": os.path.join(root, "gt.json"), "gt_dir": os.path.join(root, "gt"),
                 "pred_json": os.path.join(root, "pred.json"), "pred_dir": os.path.join(root, "pred")}
    else:
        paths = write_random_vps(root, 0, cfg)
    ours = _timed([sys.executable, "-m", "local2global.evaluation.vps", "--gt-json", paths["gt_json"], "--gt-dir",
                   paths["gt_dir"], "--pred-json", paths["pred_json"], "--pred-dir", paths["pred_dir"],
                   "--output", os.path.join(root, "ours.json")], os.getcwd())
    off = run_official(paths, official_dir, python, num_processes)
    return {"videos": videos, "frames": frames, "size": [height, width], "official_num_processes": num_processes,
            "ours_seconds": ours["seconds"], "ours_max_rss_mb": ours["max_rss_mb"], "ours_rc": ours["rc"],
            **{k: v for k, v in off.items() if k.endswith(("seconds", "rss_mb", "rc"))},
            "official": {k: off.get(k) for k in ("VPQ", "VPQ_th", "VPQ_st", "STQ", "AQ", "IoU")},
            "ours_tail": ours["out"].strip().splitlines()[-1:] if ours["out"] else ours["err"][-500:]}


def main(argv: Optional[list] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["agree", "speed"])
    ap.add_argument("--seeds", default="0:50", help="start:stop")
    ap.add_argument("--root", default="/tmp/vps_compare")
    ap.add_argument("--out", default=None)
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--num-processes", type=int, default=1)
    args = ap.parse_args(argv)
    official_dir, python = os.environ.get(OFFICIAL_ENV), os.environ.get(OFFICIAL_PYTHON_ENV, "python3")
    if not official_dir:
        ap.exit(2, f"set {OFFICIAL_ENV} to the official ClipPanoFCN folder\n")
    if args.mode == "agree":
        a, b = (int(x) for x in args.seeds.split(":"))
        res = agreement(range(a, b), args.root, official_dir, python)
    else:
        res = speed(args.root, official_dir, python, args.videos, args.frames, args.height, args.width,
                    args.num_processes)
    res["ru_maxrss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    text = json.dumps(res, indent=1, default=str)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    return res


if __name__ == "__main__":
    main()

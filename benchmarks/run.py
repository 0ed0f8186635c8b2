#!/usr/bin/env python
"""The benchmark runner (``make bench`` / ``make bench-quick``): run named cases, then write RESULTS.md.

    python benchmarks/run.py                      # every case, full mode (hours on 2 CPU cores)
    python benchmarks/run.py --quick              # every case, reduced sizes (< 10 min on 2 CPU cores)
    python benchmarks/run.py --cases inference,eval --force
    python benchmarks/run.py --render-only        # rebuild RESULTS.md + plots from the cache
    python benchmarks/run.py --list
    python benchmarks/run.py --threads 1 ...       # fix the CPU thread count (default: the idle cores)

Each case's result is cached under ``benchmarks/cache/<case>-<mode>-<commit>.json`` (not re-run for the same
clean commit unless ``--force``); RESULTS.md is rendered from the newest cached record of every case, with the
mode, commit, date, machine and command that produced it. Device: CUDA when available, else CPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _threads_from_argv(argv) -> str:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return os.environ.get("L2G_BENCH_THREADS", "")


def _auto_threads() -> str:
    """Without --threads / $OMP_NUM_THREADS: the cores not already busy (1-min load average), at least 1.

    Oversubscribed OpenMP threads spin: on a 2-core machine shared with other jobs, 2 threads ran the models
    10-30x slower than 1 thread.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return ""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ""
    cores = os.cpu_count() or 1
    return str(max(1, min(cores, int(cores - load + 0.5))))


# The thread count must be fixed before torch is imported (and is inherited by the per-length subprocesses).
_THREADS = _threads_from_argv(sys.argv[1:]) or _auto_threads()
if _THREADS:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _THREADS
for p in (ROOT, ROOT / "projects"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks import harness  # noqa: E402
from benchmarks.cases import load_all  # noqa: E402

logger = logging.getLogger("benchmarks.run")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (the < 10 min mode)")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--force", action="store_true", help="re-run even when a cached result exists")
    parser.add_argument("--render-only", action="store_true", help="only rebuild RESULTS.md from the cache")
    parser.add_argument("--threads", default=_THREADS or None,
                        help="CPU threads (OMP_NUM_THREADS) for every case; default: $L2G_BENCH_THREADS, else "
                             "$OMP_NUM_THREADS, else the cores not busy by the 1-min load average (at least 1): "
                             "oversubscribed OpenMP threads spin and were 10-30x slower on a shared 2-core machine")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--update-sections", action="store_true",
                        help="replace only the sections (and headlines) of --cases in the existing RESULTS.md, keeping "
                             "the others (for a machine whose cache holds only some cases' records)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load_all()
    if args.list:
        for name, doc in harness.CASE_DOCS.items():
            print(f"{name:12s} {doc.splitlines()[0] if doc else ''}")
        return 0
    names = [c for c in args.cases.split(",") if c] or list(harness.CASES)
    unknown = [n for n in names if n not in harness.CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {sorted(harness.CASES)}")
    t0 = time.time()
    if not args.render_only:
        cmd = ("python benchmarks/run.py" + (" --quick" if args.quick else "")
               + (f" --threads {args.threads}" if args.threads else "") + " --cases {case} --force")
        harness.run_cases(names, quick=args.quick, force=args.force, command=cmd)
    from benchmarks.cases._report import update_sections, write_results

    if args.update_sections and Path(args.output).is_file():
        update_sections(Path(args.output), names)
    else:
        write_results(Path(args.output))
    logger.info("benchmarks done in %.0f s; wrote %s", time.time() - t0, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

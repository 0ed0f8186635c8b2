"""Benchmark harness: named cases, median-of-runs timing, interleaved A/B ratios, a per-commit cache.

Every case is a function ``case(quick: bool) -> dict`` registered with :func:`register`. :func:`run_cases` runs
the requested cases, caching each result under ``benchmarks/cache/<case>-<mode>-<commit>.json`` so that a full run
can be spread over several sessions; ``benchmarks/run.py`` then renders every cached figure into
``benchmarks/RESULTS.md`` with the mode and commit that produced it.

Timing rules: each figure is the median of several runs after a warm-up; a ratio between two variants is taken
within one run by interleaving them (A, B, A, B, ...) so that machine drift cancels.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / "benchmarks" / "cache"

CASES: Dict[str, Callable[[bool], dict]] = {}
CASE_DOCS: Dict[str, str] = {}
RENDERERS: Dict[str, Callable[[dict], str]] = {}
HEADLINES: Dict[str, Callable[[dict], str]] = {}
CASE_MODULE_DOCS: Dict[str, str] = {}


def register(name: str):
    """Decorator: register ``fn(quick) -> dict`` as benchmark case ``name``."""

    def deco(fn):
        CASES[name] = fn
        CASE_DOCS[name] = (fn.__doc__ or "").strip()
        module = sys.modules.get(fn.__module__)
        CASE_MODULE_DOCS[name] = (getattr(module, "__doc__", None) or "").strip()
        return fn

    return deco


def renderer(name: str):
    """Decorator: register ``fn(record) -> markdown`` that renders case ``name``'s cached record in RESULTS.md."""

    def deco(fn):
        RENDERERS[name] = fn
        return fn

    return deco


def headline(name: str):
    """Decorator: register ``fn(record) -> str``, a one-line headline of case ``name`` for RESULTS.md's top."""

    def deco(fn):
        HEADLINES[name] = fn
        return fn

    return deco


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(fns: Dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> Dict[str, dict]:
    """Time several variants interleaved (A, B, A, B, ...): median and all samples per variant."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync()
            t0 = time.perf_counter()
            fn()
            _sync()
            samples[name].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "samples_s": v} for k, v in samples.items()}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cache_path(case: str, quick: bool, commit: str) -> Path:
    return CACHE_DIR / f"{case}-{'quick' if quick else 'full'}-{commit}.json"


def latest_cached(case: str) -> Optional[dict]:
    """Most recent cached result of ``case`` (any commit); a full-mode record wins over any quick one and a
    measured record over a skipped one."""
    if not CACHE_DIR.exists():
        return None
    files = sorted(CACHE_DIR.glob(f"{case}-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    skipped = None
    for mode in ("full", "quick"):
        for f in files:
            if not f.name.startswith(f"{case}-{mode}-"):
                continue
            try:
                rec = json.loads(f.read_text())
            except json.JSONDecodeError:
                continue
            if isinstance(rec.get("figures"), dict) and "skipped" in rec["figures"]:
                skipped = skipped or rec  # a skipped run never hides a measured one
                continue
            return rec
    return skipped


def run_cases(names: Sequence[str], quick: bool, force: bool = False, command: Optional[str] = None
              ) -> Dict[str, dict]:
    """Run (or load from cache) each case; returns ``{case: record}``.

    ``command`` (the command line that re-runs the case; ``{case}`` is replaced by the case name) is stored in
    the record for RESULTS.md.
    """
    commit = git_commit()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        path = cache_path(name, quick, commit)
        if path.exists() and not force and not commit.endswith("-dirty"):
            results[name] = json.loads(path.read_text())
            print(f"[bench] {name}: cached ({path.name})", flush=True)
            continue
        print(f"[bench] {name}: running ({'quick' if quick else 'full'})", flush=True)
        t0 = time.time()
        figures = CASES[name](quick)
        record = {
            "case": name,
            "mode": "quick" if quick else "full",
            "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine_info(),
            "duration_s": round(time.time() - t0, 1),
            "command": command.format(case=name) if command else None,
            "figures": figures,
        }
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
        results[name] = record
        print(f"[bench] {name}: done in {record['duration_s']} s", flush=True)
    return results

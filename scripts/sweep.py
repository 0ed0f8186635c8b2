#!/usr/bin/env python
"""Run an ablation grid as separate ``scripts/train_net.py`` runs and collect their metrics.

    # the paper's tables (3: aligner / trajectory, 5: aligner width, 6: l_pos and reduced supervision)
    python scripts/sweep.py --table 3 --config-file configs/local2global_r50_ytvis19.py --out output/table3 --num-gpus 4
    # on a CPU, the tiny synthetic recipe, shortened
    python scripts/sweep.py --table 6 --config-file configs/local2global_tiny_synthetic.py --out output/t6 \
        train.max_iter=200
    # your own grid: the cartesian product of --grid options, or a YAML file
    python scripts/sweep.py --grid model.aligner.dim_feedforward=64,128 --grid optimizer.lr=1e-4,2e-4 ...
    python scripts/sweep.py --grid-file my_grid.yaml ...
    # a tracker table: one row per config file (rows may differ in their tracker, recipe, anything)
    python scripts/sweep.py --configs configs/trackers/minvis_tiny_synthetic.py configs/local2global_tiny_synthetic.py \
        --out output/trackers train.init_checkpoint=output/demo/warmup/model_final.pth

A grid YAML has ``grid: {key: [values...]}`` (cartesian product) and/or ``runs: {run_name: [overrides...]}``
(or ``{run_name: {config: path, overrides: [...]}}`` for a row with its own config file), and optionally
``overrides: [...]`` applied to every run. ``--configs`` makes one row per config file (named after the file).
A row whose config has ``train.eval_only = True`` (a training-free tracker such as MinVIS on a given segmenter
checkpoint) is evaluated with ``--eval-only`` instead of trained; it counts as finished once its
``eval_results.json`` exists. Trailing ``key=value`` arguments are applied to every run
too. Every run writes into ``<out>/<run_name>/``; a run that already finished (``last_checkpoint`` names
``model_final.pth`` and its metrics hold the final evaluation) is skipped, an interrupted one is resumed
(``--resume``). All overrides are checked against the config (strict keys) before anything starts.
The results go to ``<out>/results.md`` (Markdown table), ``<out>/results.json`` and ``<out>/results.png`` (bar chart).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import subprocess
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

logger = logging.getLogger("local2global.sweep")

#: The paper's ablation tables as ``{table: [(run name, overrides), ...]}`` (configs/ablations/README.md).
TABLES: Dict[str, List[Tuple[str, List[str]]]] = {
    "3": [
        ("baseline", ["model.tracker.aligner=null", "model.tracker.global_pos=static"]),
        ("baseline_refined", ["model.tracker.aligner=null", "model.tracker.global_pos=refined"]),
        ("aligner", ["model.tracker.global_pos=static"]),
        ("aligner_trajectory", ["model.tracker.global_pos=trajectory"]),
    ],
    "5": [
        ("width512", ["model.tracker.aligner.dim_feedforward=512"]),
        ("width1024", ["model.tracker.aligner.dim_feedforward=1024"]),
        ("width2048", ["model.tracker.aligner.dim_feedforward=2048"]),
    ],
    "6": [
        ("lpos_static", ["model.tracker.aligner.local_pos=static"]),
        ("lpos_dynamic", ["model.tracker.aligner.local_pos=dynamic"]),
        ("reduced_sup_on", ["model.criterion.reduced_supervision=true"]),
        ("reduced_sup_off", ["model.criterion.reduced_supervision=false"]),
    ],
}

from local2global.engine.metrics import REPORTED, read_final_metrics  # noqa: E402


def _fmt_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def run_name_for(overrides: Sequence[str]) -> str:
    """A folder-safe run name from overrides: ``model.aligner.dim_feedforward=64`` -> ``dim_feedforward-64``."""
    parts = []
    for o in overrides:
        key, _, value = o.partition("=")
        parts.append(f"{key.lstrip('+').split('.')[-1]}-{value}")
    name = "__".join(parts) or "base"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


#: A sweep row: (run name, overrides, config file or None for the sweep's ``--config-file``).
Run = Tuple[str, List[str], Optional[str]]


def grid_runs(grid: "OrderedDict[str, List]") -> List[Tuple[str, List[str]]]:
    """Cartesian product of ``{key: [values]}`` as ``(run name, overrides)``."""
    keys = list(grid)
    runs = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        overrides = [f"{k}={_fmt_value(v)}" for k, v in zip(keys, combo)]
        runs.append((run_name_for(overrides), overrides))
    return runs


def parse_grid_args(items: Sequence[str]) -> "OrderedDict[str, List[str]]":
    """``["a.b=1,2", "c=x,y"]`` -> ``{"a.b": ["1", "2"], "c": ["x", "y"]}`` (values kept as override text)."""
    grid: "OrderedDict[str, List[str]]" = OrderedDict()
    for item in items:
        if "=" not in item:
            raise ValueError(f"--grid {item!r}: expected key=v1,v2,...")
        key, values = item.split("=", 1)
        vals = [v for v in _split_top_level(values) if v != ""]
        if not vals:
            raise ValueError(f"--grid {item!r}: no values")
        grid[key.strip()] = vals
    return grid


def _split_top_level(text: str) -> List[str]:
    """Split on commas that are not inside brackets (``[1,2],[3]`` -> two values)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def config_runs(paths: Sequence[str]) -> List[Run]:
    """One row per config file, named after the file (``configs/trackers/minvis_tiny.py`` -> ``minvis_tiny``)."""
    runs = []
    for path in paths:
        if not os.path.isfile(path):
            raise SystemExit(f"sweep: --configs {path!r}: no such file")
        runs.append((os.path.splitext(os.path.basename(path))[0], [], path))
    return runs


def load_grid_file(path: str) -> Tuple[List[Run], List[str]]:
    """Runs and common overrides of a grid YAML (see the module docstring)."""
    import yaml

    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    if not isinstance(spec, dict) or not ({"grid", "runs"} & set(spec)):
        raise ValueError(f"{path}: a grid file needs a 'grid' and/or 'runs' mapping")
    unknown = set(spec) - {"grid", "runs", "overrides", "name"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)} (grid, runs, overrides, name)")
    runs: List[Run] = []
    if spec.get("grid"):
        runs += [(n, o, None) for n, o in
                 grid_runs(OrderedDict((k, list(v) if isinstance(v, list) else [v]) for k, v in spec["grid"].items()))]
    for name, row in (spec.get("runs") or {}).items():
        if isinstance(row, dict):
            unknown_row = set(row) - {"config", "overrides"}
            if unknown_row:
                raise ValueError(f"{path}: run {name!r}: unknown keys {sorted(unknown_row)} (config, overrides)")
            runs.append((str(name), [str(o) for o in (row.get("overrides") or [])], row.get("config")))
        else:
            runs.append((str(name), [str(o) for o in (row or [])], None))
    return runs, [str(o) for o in (spec.get("overrides") or [])]


# ------------------------------------------------------------------------------------------------ run state
def is_finished(run_dir: str, eval_only: bool = False) -> bool:
    """``last_checkpoint`` names the final model and the final evaluation was written (eval-only rows: the latter)."""
    if eval_only:
        return os.path.isfile(os.path.join(run_dir, "eval_results.json")) and read_final_metrics(run_dir) is not None
    marker = os.path.join(run_dir, "last_checkpoint")
    if not os.path.isfile(marker):
        return False
    with open(marker) as f:
        last = f.read().strip()
    return last == "model_final.pth" and os.path.isfile(os.path.join(run_dir, last)) and \
        read_final_metrics(run_dir) is not None


def validate_overrides(config_file: Optional[str], runs: Sequence[Run], common: Sequence[str]) -> Dict[str, bool]:
    """Fail before the first run if any run's overrides name an unknown key or a bad value.

    Returns:
        ``{run name: eval_only}``: rows whose config (after overrides) has ``train.eval_only = True``.
    """
    from detectron2.config import LazyConfig

    from local2global.engine.overrides import apply_overrides_strict

    eval_only = {}
    for name, overrides, cfg_file in runs:
        path = cfg_file or config_file
        if path is None:
            raise SystemExit(f"sweep: run {name!r} has no config file: give --config-file")
        cfg = LazyConfig.load(path)
        try:
            apply_overrides_strict(cfg, list(common) + list(overrides))
        except Exception as e:
            raise SystemExit(f"sweep: run {name!r}: {e}") from e
        eval_only[name] = bool(cfg.train.get("eval_only", False))
    return eval_only


def run_one(args, name: str, overrides: List[str], common: List[str], config_file: Optional[str] = None,
            eval_only: bool = False) -> int:
    run_dir = os.path.join(args.out, name)
    os.makedirs(run_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(_REPO, "scripts", "train_net.py"), "--config-file",
           config_file or args.config_file, "--num-gpus", str(args.num_gpus)]
    cmd += ["--eval-only"] if eval_only else ["--resume"]
    if args.dist_url:
        cmd += ["--dist-url", args.dist_url]
    cmd += list(common) + list(overrides) + [f"train.output_dir={run_dir}"]
    logger.info("[%s] %s", name, " ".join(cmd))
    with open(os.path.join(run_dir, "sweep_stdout.log"), "a") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=_REPO)
    if proc.returncode != 0:
        logger.error("[%s] failed (exit %d); see %s", name, proc.returncode, os.path.join(run_dir, "log.txt"))
    return proc.returncode


# ------------------------------------------------------------------------------------------------ report
def collect(out: str, runs: Sequence[Run], status: Dict[str, str]) -> List[dict]:
    rows = []
    for name, overrides, cfg_file in runs:
        metrics = read_final_metrics(os.path.join(out, name)) or {}
        rows.append({"run": name, "overrides": overrides, "config": cfg_file, "status": status.get(name, "?"),
                     "metrics": metrics})
    return rows


def _task_of(rows: List[dict]) -> Optional[str]:
    for r in rows:
        for k in r["metrics"]:
            if k.endswith("/AP"):
                return k.split("/")[0]
    return None


def markdown_table(rows: List[dict], title: str = "") -> str:
    task = _task_of(rows) or "segm"
    cols = [c for c in REPORTED if any(f"{task}/{c}" in r["metrics"] for r in rows)] or ["AP"]
    lines = [f"## {title}", ""] if title else []
    with_config = any(r.get("config") for r in rows)
    lines.append("| run | " + ("config | " if with_config else "") + "overrides | " + " | ".join(cols) + " | status |")
    lines.append("|---|" + ("---|" if with_config else "") + "---|" + "---:|" * len(cols) + "---|")
    for r in rows:
        vals = []
        for c in cols:
            v = r["metrics"].get(f"{task}/{c}")
            vals.append("-" if v is None else ("nan" if v != v else f"{v:.1f}"))
        ov = " ".join(f"`{o}`" for o in r["overrides"]) or ("-" if r.get("config") else "(base)")
        cfg_col = f"`{r['config']}` | " if r.get("config") else ("(base) | " if with_config else "")
        lines.append(f"| {r['run']} | {cfg_col}{ov} | " + " | ".join(vals) + f" | {r['status']} |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: List[dict], path: str, metric: str = "AP", title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = _task_of(rows) or "segm"
    names = [r["run"] for r in rows]
    vals = [r["metrics"].get(f"{task}/{metric}", float("nan")) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 1), 3.5))
    bars = ax.bar(range(len(rows)), [0 if v != v else v for v in vals], color="#4c72b0")
    for b, v in zip(bars, vals):
        ax.annotate("n/a" if v != v else f"{v:.1f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{task} {metric}")
    ax.set_title(title or f"{task} {metric} per run")
    fig.tight_layout()
    tmp = path + ".partial.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(out: str, rows: List[dict], title: str, metric: str) -> str:
    md = markdown_table(rows, title)
    for fname, text in (("results.md", md), ("results.json", json.dumps(rows, indent=2))):
        tmp = os.path.join(out, fname + ".partial")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out, fname))
    bar_chart(rows, os.path.join(out, "results.png"), metric=metric, title=title)
    return md


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to run (one or more)")
    src.add_argument("--table", choices=sorted(TABLES), action="append", default=[],
                     help="a predefined paper table (3, 5, 6); may be repeated")
    src.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                     help="a grid axis; several --grid options form their cartesian product")
    src.add_argument("--grid-file", help="a grid YAML (grid: {key: [values]}, runs: {name: [overrides]}, overrides: [])")
    src.add_argument("--configs", nargs="+", default=[], metavar="CFG",
                     help="one row per config file (e.g. a tracker table: configs/trackers/*.py)")
    p.add_argument("--config-file", default=None, help="the base LazyConfig of the --table / --grid runs")
    p.add_argument("--out", required=True, help="sweep folder: one sub-folder per run + results.{md,json,png}")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per run (CPU processes without a GPU)")
    p.add_argument("--dist-url", default=None)
    p.add_argument("--metric", default="AP", help="metric of the bar chart (AP, AP50, ...)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs, run nothing")
    p.add_argument("--collect-only", action="store_true", help="only rebuild the report from existing runs")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="overrides applied to every run")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    runs: List[Run] = []
    common: List[str] = []
    titles = []
    if (args.table or args.grid) and not args.config_file:
        raise SystemExit("sweep: --table and --grid need --config-file (the base config of their rows)")
    for t in args.table:
        runs += [(f"table{t}_{n}" if len(args.table) > 1 else n, o, None) for n, o in TABLES[t]]
        titles.append(f"Table {t}")
    if args.grid:
        runs += [(n, o, None) for n, o in grid_runs(parse_grid_args(args.grid))]
        titles.append("grid")
    if args.configs:
        runs += config_runs(args.configs)
        titles.append("configs")
    if args.grid_file:
        file_runs, file_common = load_grid_file(args.grid_file)
        runs += file_runs
        common += file_common
        titles.append(os.path.basename(args.grid_file))
    if not runs:
        raise SystemExit("sweep: nothing to run: give --table, --grid, --grid-file or --configs")
    names = [n for n, _, _ in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SystemExit(f"sweep: duplicate run names {dup}")
    common += [o for o in args.opts if o != "--"]
    os.makedirs(args.out, exist_ok=True)
    title = " + ".join(titles) + (f" ({os.path.basename(args.config_file)})" if args.config_file else "")

    status: Dict[str, str] = {}
    if not args.collect_only:
        eval_only = validate_overrides(args.config_file, runs, common)
        for name, overrides, cfg_file in runs:
            run_dir = os.path.join(args.out, name)
            if is_finished(run_dir, eval_only[name]):
                logger.info("[%s] already finished: skipped", name)
                status[name] = "skipped (done)"
                continue
            if args.dry_run:
                logger.info("[%s] would run: %s", name, " ".join(common + overrides))
                status[name] = "dry-run"
                continue
            rc = run_one(args, name, overrides, common, cfg_file, eval_only[name])
            status[name] = "ok" if rc == 0 else f"failed (exit {rc})"
    else:
        status = {n: ("done" if is_finished(os.path.join(args.out, n)) or is_finished(os.path.join(args.out, n), True)
                      else "incomplete") for n in names}
    rows = collect(args.out, runs, status)
    md = write_report(args.out, rows, title, args.metric)
    print(md)
    return 1 if any(s.startswith("failed") for s in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Parity of the project's DVIS tracker body with the official ``ReferringTracker`` (``dvis_parity.py``).

Runs ``benchmarks/cases/dvis_parity.py`` (which reads the official module from a DVIS clone at run time and never
vendors it) on the git directory named by ``$L2G_DVIS_GIT_DIR`` (a clone of github.com/zhang-tao-whu/DVIS);
without it the case records that it was skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import headline, register, renderer

from ._common import ROOT


@register("dvis-parity")
def case_dvis_parity(quick: bool) -> dict:
    """DVIS referring-tracker body vs the official module: max |diff| per output, float64 and float32."""
    git_dir = os.environ.get("L2G_DVIS_GIT_DIR")
    if not git_dir or not Path(git_dir).exists():
        return {"skipped": "set $L2G_DVIS_GIT_DIR to the git directory of a DVIS clone"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "parity.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "cases" / "dvis_parity.py"), "--dvis-git-dir", git_dir,
               "--json", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return json.loads(out.read_text())


@renderer("dvis-parity")
def render_dvis_parity(rec: dict) -> str:
    f = rec["figures"]
    if f.get("skipped"):
        return f"Skipped: {f['skipped']}."
    lines = [f"Official DVIS commit `{f.get('official_commit')}`.", "",
             "| dtype | inputs | official `match_embds` | blocks | class logits | mask embeddings | mask logits |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in f["runs"]:
        d = r["max_abs_diff"]
        lines.append(f"| {r['dtype']} | {r['regime']} | {r['match_embds']} | {d['blocks']:.1e} | {d['logits']:.1e} | "
                     f"{d['mask_embeds']:.1e} | {d['masks']:.1e} |")
    extra = {k: v for k, v in f.items() if k not in ("runs", "official_commit")}
    if extra:
        lines += ["", "```json", json.dumps(extra, indent=1)[:3000], "```"]
    return "\n".join(lines)


@headline("dvis-parity")
def headline_dvis_parity(rec: dict) -> str:
    f = rec["figures"]
    if f.get("skipped"):
        return "DVIS parity: skipped (no DVIS clone given)."
    worst = {r["dtype"]: max(r["max_abs_diff"].values()) for r in f["runs"]}
    return ("DVIS parity (tracker body vs the official ReferringTracker): max |diff| "
            + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()) + ".")

"""Item 1b: our image mode (the segmenter alone) against detrex's MaskDINO on the same weights and input.

detrex is **not** part of this project and none of its code is committed here. The comparison runs detrex from
a snapshot fetched outside the repository, through an external driver script named by the environment
variable ``L2G_DETREX_COMPARE`` (the method is described in RESULTS.md); without it the case records that it
was skipped. The driver prints one JSON line, which this case stores.

What the driver does (in words): it copies detrex's ``detrex/`` and ``projects/maskdino/`` into a temporary
folder, applies the two patches of ``tests/data/maskdino/DETREX_NOTES.md`` §2 there (the pure-PyTorch
deformable attention instead of the missing compiled extension; the hard-coded ``.cuda()`` of the eval-path
mask-to-box initialisation replaced by the device of the masks), registers ``detrex``, ``detrex.modeling``,
``detrex.modeling.backbone``, ``projects.maskdino`` and ``projects.maskdino.modeling`` as bare namespace
packages (their ``__init__`` files import optional dependencies) plus an empty ``wandb`` module, and builds
detrex's ``maskdino_r50`` model config. Our R-50 model is built with random weights; its state dict, renamed
to detrex names (the inverse of ``local2global.modeling.checkpoint.DETREX_PREFIX_MAP``; the aligner keys have
no counterpart), is loaded into detrex's model. Both then run in one process on the same synthetic 360×640
frame, interleaved: detrex = ``backbone`` + ``sem_seg_head`` (raw outputs), ours = ``preprocess`` + ``encode``
+ ``step(None, ...)`` (image mode, raw outputs), and ours with the reference deformable attention
(``set_implementation("reference")``, detrex's formulation). The pixel encoders alone are also timed
interleaved on the same backbone features. Output equality: max |difference| of ``pred_logits``,
``pred_masks``, ``pred_boxes``.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.harness import headline, register, renderer

from ._common import load_average, run_subprocess

ENV = "L2G_DETREX_COMPARE"


@register("detrex")
def case_detrex(quick: bool) -> dict:
    """Image mode vs detrex MaskDINO R-50 (same weights, same 360×640 input, interleaved): time ratio, max diff."""
    script = os.environ.get(ENV)
    if not script or not Path(script).is_file():
        return {"skipped": f"${ENV} does not name the external driver script (detrex is not part of this "
                           "project); see the method in RESULTS.md"}
    env = {"REPEATS": "2" if quick else "5", "H": "360", "W": "640"}
    load_before = load_average()
    rec = run_subprocess([script], env_extra=env, timeout=3 * 3600)
    rec["load_avg_before"], rec["load_avg_after"] = load_before, load_average()
    return rec


@renderer("detrex")
def render_detrex(rec: dict) -> str:
    f = rec["figures"]
    if "skipped" in f:
        return f"Skipped: {f['skipped']}."
    t, e = f["times"], f["encoder_times"]
    lines = ["| variant (R-50, 360×640, raw network outputs) | median s / frame | samples (s) |", "|---|---:|---|"]
    for k, v in list(t.items()) + list(e.items()):
        lines.append(f"| {k} | {v['median_s']:.3f} | {', '.join(f'{s:.2f}' for s in v['samples_s'])} |")
    d, s = f["max_abs_diff"], f["max_abs_value"]
    lines += ["",
              f"* **ours / detrex = {f['ratio_ours_detrex']:.3f}** (median of {len(f['ratio_pairs'])} interleaved pairs; "
              f"target <= 0.8); pixel encoder alone: ours / detrex = {f['ratio_encoder_ours_detrex']:.3f}.",
              "* Max |ours − detrex|: " + ", ".join(f"`{k}` {d[k]:.2g} (max |value| {s[k]:.3g})" for k in d) + ".",
              "* Max |fast − reference deformable attention| (ours): "
              + ", ".join(f"`{k}` {v:.2g}" for k, v in f["max_abs_diff_ref_vs_fast"].items()) + ".",
              f"* Weight transfer: missing in detrex {len(f['missing_keys_in_detrex'])}, unexpected "
              f"{f['num_unexpected']} (all `aligner.*`: {not f['unexpected_non_aligner_keys']}).",
              f"* detrex snapshot: IDEA-Research/detrex `{f.get('detrex_commit') or 'e244e6c'}`; "
              f"load average before / after: {f['load_avg_before']} / {f['load_avg_after']}."]
    return "\n".join(lines)


@headline("detrex")
def headline_detrex(rec: dict) -> str:
    f = rec["figures"]
    if "skipped" in f:
        return "detrex comparison: skipped (no external driver)."
    return (f"Image mode vs detrex MaskDINO R-50 (same weights, 360×640, CPU): ours / detrex = "
            f"{f['ratio_ours_detrex']:.3f}, max |Δ mask logit| {f['max_abs_diff']['pred_masks']:.1g}.")

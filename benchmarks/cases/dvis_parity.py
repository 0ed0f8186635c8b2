"""Parity of :class:`~local2global.modeling.trackers.dvis.DVISTracker`'s body with DVIS's official ``ReferringTracker``.

The official module is *not* part of this project: this script takes a DVIS checkout (``--dvis-root``) or the git
directory of a clone (``--dvis-git-dir``, read with ``git show``), copies the three files it needs at run time into
a temporary directory (``dvis/video_dvis_modules.py`` and ``mask2former_video/modeling/transformer_decoder/
{video_mask2former_transformer_decoder,position_encoding}.py``) and stubs the packages around them (empty
``__init__`` files instead of the ones that import the compiled Mask2Former / MSDeformAttn pieces, and a detectron2
``Registry`` for ``TRANSFORMER_DECODER_REGISTRY``). Both trackers get the same random weights (ours copied into
theirs by the name map :data:`NAME_MAP`) and the same random segmenter queries and mask features of a few frames,
batch 1, eval mode; the script reports the max absolute difference of

* every block's output at every frame (before the heads' norm; forward hooks on both sides),
* the class logits of every block (ours: C sigmoid logits = their first C of C+1),
* the mask embeddings of every block and the mask logits.

Two input regimes, because DVIS's ``match_embds`` applies the *inverse* of the Hungarian assignment (see the
module docstring of ``trackers/dvis.py``):

* ``involution``: the frames' queries are frame 0's permuted by disjoint transpositions (plus small noise), so the
  assignment is its own inverse and the official code runs unmodified;
* ``random``: unrelated random queries per frame, the official ``match_embds`` replaced by DVIS++'s orientation
  (``cos(cur, ref)``, ``zhang-tao-whu/DVIS_Plus`` ``dvis_Plus/noiser.py``); the unpatched difference is reported
  too (it measures the orientation quirk, not the body).

    python benchmarks/cases/dvis_parity.py --dvis-git-dir /path/to/DVIS/.git [--json out.json]

Exits 0 when every compared quantity agrees to ``--atol`` (float64: 1e-9) and skips (exit 0, a message) when no
DVIS source is given or found.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch

logger = logging.getLogger("dvis_parity")

OFFICIAL_FILES = {
    "dvis_official/video_dvis_modules.py": "dvis/video_dvis_modules.py",
    "mask2former_video/modeling/transformer_decoder/video_mask2former_transformer_decoder.py":
        "mask2former_video/modeling/transformer_decoder/video_mask2former_transformer_decoder.py",
    "mask2former_video/modeling/transformer_decoder/position_encoding.py":
        "mask2former_video/modeling/transformer_decoder/position_encoding.py",
}
STUB_PACKAGES = ["dvis_official", "mask2former_video", "mask2former_video/modeling",
                 "mask2former_video/modeling/transformer_decoder", "mask2former", "mask2former/modeling",
                 "mask2former/modeling/transformer_decoder"]
REGISTRY_STUB = ("from detectron2.utils.registry import Registry\n"
                 "TRANSFORMER_DECODER_REGISTRY = Registry('TRANSFORMER_MODULE')\n")

#: Our parameter name prefix (per block ``blocks.{j}.``) -> theirs.
NAME_MAP = {
    "cross_attn.attn.": "transformer_cross_attention_layers.{j}.multihead_attn.",
    "cross_attn.norm.": "transformer_cross_attention_layers.{j}.norm.",
    "self_attn.": "transformer_self_attention_layers.{j}.self_attn.",
    "norm_sa.": "transformer_self_attention_layers.{j}.norm.",
    "linear1.": "transformer_ffn_layers.{j}.linear1.",
    "linear2.": "transformer_ffn_layers.{j}.linear2.",
    "norm_ffn.": "transformer_ffn_layers.{j}.norm.",
}
#: Perturbation of the "involution" frames (small: the Hungarian assignment stays the transpositions).
INVOLUTION_NOISE = 0.05


def extract_official(workdir: Path, dvis_root: Optional[Path], dvis_git_dir: Optional[Path]) -> bool:
    """Write the official files (and the stubs) under ``workdir``; False when a file cannot be read."""
    for pkg in STUB_PACKAGES:
        (workdir / pkg).mkdir(parents=True, exist_ok=True)
        (workdir / pkg / "__init__.py").write_text("")
    (workdir / "mask2former/modeling/transformer_decoder/maskformer_transformer_decoder.py").write_text(REGISTRY_STUB)
    for dst, src in OFFICIAL_FILES.items():
        if dvis_root is not None:
            path = dvis_root / src
            if not path.is_file():
                logger.warning("missing %s", path)
                return False
            text = path.read_text()
        else:
            proc = subprocess.run(["git", "--git-dir", str(dvis_git_dir), "show", f"HEAD:{src}"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                logger.warning("git show HEAD:%s failed: %s", src, proc.stderr.strip())
                return False
            text = proc.stdout
        (workdir / dst).write_text(text)
    return True


def official_commit(dvis_root: Optional[Path], dvis_git_dir: Optional[Path]) -> str:
    args = ["git", "--git-dir", str(dvis_git_dir)] if dvis_git_dir else ["git", "-C", str(dvis_root)]
    proc = subprocess.run(args + ["rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def copy_weights(ours: torch.nn.Module, theirs: torch.nn.Module, num_classes: int) -> None:
    """Copy our tracker's parameters into the official module (class head: their first C rows, no-object row 0)."""
    target = theirs.state_dict()
    copied = set()
    for name, value in ours.state_dict().items():
        if name.startswith("blocks."):
            _, j, rest = name.split(".", 2)
            for ours_prefix, their_prefix in NAME_MAP.items():
                if rest.startswith(ours_prefix):
                    key = their_prefix.format(j=j) + rest[len(ours_prefix):]
                    break
            else:
                raise KeyError(f"no mapping for {name}")
        elif name.startswith("norm."):
            key = "decoder_norm." + name[len("norm."):]
        elif name.startswith("class_embed."):
            key = name
            full = torch.zeros_like(target[key])
            full[:num_classes] = value
            target[key] = full
            copied.add(key)
            continue
        else:
            key = name  # mask_embed.layers.{i}.*
        if target[key].shape != value.shape:
            raise ValueError(f"{name} -> {key}: {tuple(value.shape)} vs {tuple(target[key].shape)}")
        target[key] = value.clone()
        copied.add(key)
    missing = set(target) - copied
    if missing:
        raise KeyError(f"official parameters without a source: {sorted(missing)}")
    theirs.load_state_dict(target)


def make_inputs(regime: str, frames: int, num: int, dim: int, hw: int, generator: torch.Generator,
                dtype: torch.dtype):
    """``embeds (T, N, D)`` normed-like queries and ``mask_features (T, D, h, w)``."""
    base = torch.randn(num, dim, generator=generator, dtype=dtype)
    embeds = []
    for t in range(frames):
        if regime == "random" or t == 0:
            x = base if t == 0 else torch.randn(num, dim, generator=generator, dtype=dtype)
        else:
            perm = torch.arange(num)
            order = torch.randperm(num, generator=generator)
            pairs = order[: 2 * (num // 4)].view(-1, 2)  # disjoint transpositions: an involution
            perm[pairs[:, 0]], perm[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
            x = base[perm] + INVOLUTION_NOISE * torch.randn(num, dim, generator=generator, dtype=dtype)
        embeds.append(x)
    mask_features = torch.randn(frames, dim, hw, hw, generator=generator, dtype=dtype)
    return torch.stack(embeds), mask_features


def run_ours(tracker, embeds: torch.Tensor, mask_features: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
    """Our tracker through :meth:`DVISTracker.update` frame by frame (batch 1)."""
    captured: List[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: captured.append(o.detach())) for b in tracker.blocks]
    mask_embeds: List[torch.Tensor] = []
    hooks.append(tracker.mask_embed.register_forward_hook(lambda m, i, o: mask_embeds.append(o.detach())))
    result = {"blocks": [], "logits": [], "masks": [], "mask_embeds": [], "perm": []}
    state = None
    num = embeds.shape[1]
    try:
        for t in range(embeds.shape[0]):
            captured.clear()
            mask_embeds.clear()
            hs = embeds[t : t + 1]
            decoded = SimpleNamespace(hs=[hs], pred_boxes=[torch.full((1, num, 4), 0.5, dtype=hs.dtype)],
                                      pred_logits=[torch.zeros(1, num, 1, dtype=hs.dtype)],
                                      pred_masks=[torch.zeros(1, num, *mask_features.shape[-2:], dtype=hs.dtype)])
            ctx = SimpleNamespace(mask_features=mask_features[t : t + 1], want_mask_embeds=False)
            state, out = tracker.update(state, ctx, None, decoded)
            stages = out["aux_outputs"] + [out]
            result["blocks"].append(torch.stack([c[0] for c in captured]))  # (L, N, D)
            result["logits"].append(torch.stack([s["pred_logits"][0] for s in stages]))  # (L, N, C)
            result["masks"].append(torch.stack([s["pred_masks"][0] for s in stages]))  # (L, N, h, w)
            result["mask_embeds"].append(mask_embeds[0][:, 0])  # (L, N, Dm)
    finally:
        for h in hooks:
            h.remove()
    return result


def run_theirs(tracker, embeds: torch.Tensor, mask_features: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
    """The official tracker on the whole clip (its ``forward`` loops over the frames itself)."""
    captured: List[torch.Tensor] = []
    hooks = [f.register_forward_hook(lambda m, i, o: captured.append(o.detach()[:, 0]))
             for f in tracker.transformer_ffn_layers]
    mask_embeds: List[torch.Tensor] = []
    hooks.append(tracker.mask_embed.register_forward_hook(lambda m, i, o: mask_embeds.append(o.detach())))
    try:
        frame_embeds = embeds.permute(2, 0, 1).unsqueeze(0)  # (b, c, t, q)
        out = tracker(frame_embeds, mask_features.unsqueeze(0), resume=False, return_indices=False)
    finally:
        for h in hooks:
            h.remove()
    frames, layers = embeds.shape[0], tracker.num_layers
    blocks = torch.stack(captured).view(frames, layers, *captured[0].shape)  # frame-major capture order
    stages = out["aux_outputs"] + [out]
    logits = torch.stack([s["pred_logits"][0] for s in stages], 1)  # (t, L, q, C+1)
    masks = torch.stack([s["pred_masks"][0] for s in stages], 0).permute(2, 0, 1, 3, 4)  # (t, L, q, h, w)
    emb = mask_embeds[0][:, 0].permute(1, 0, 2, 3)  # (l, b, t, q, c) -> (t, L, q, c)
    return {"blocks": list(blocks), "logits": list(logits), "masks": list(masks), "mask_embeds": list(emb)}


def dvis_plus_match(ref_embds, cur_embds):
    """DVIS++'s orientation of ``match_embds`` (``cos(cur, ref)``): the assignment itself, not its inverse."""
    from scipy.optimize import linear_sum_assignment

    ref, cur = ref_embds.detach()[:, 0, :], cur_embds.detach()[:, 0, :]
    ref = ref / (ref.norm(dim=1)[:, None] + 1e-6)
    cur = cur / (cur.norm(dim=1)[:, None] + 1e-6)
    cost = (1 - torch.mm(cur, ref.transpose(0, 1))).cpu()
    return linear_sum_assignment(cost.transpose(0, 1))[1]


def compare(ours, theirs, num_classes: int) -> Dict[str, float]:
    diffs = {}
    for key in ("blocks", "logits", "masks", "mask_embeds"):
        worst = 0.0
        for a, b in zip(ours[key], theirs[key]):
            if key == "logits":
                b = b[..., :num_classes]
            worst = max(worst, float((a - b.to(a)).abs().max()))
        diffs[key] = worst
    return diffs


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--dvis-root", type=Path, help="a DVIS checkout (work tree)")
    src.add_argument("--dvis-git-dir", type=Path, help="the git directory of a DVIS clone (read with git show)")
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--dim-feedforward", type=int, default=2048)
    parser.add_argument("--num-layers", type=int, default=6)
    parser.add_argument("--num-queries", type=int, default=100)
    parser.add_argument("--num-classes", type=int, default=40)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--mask-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--atol64", type=float, default=1e-9)
    parser.add_argument("--atol32", type=float, default=1e-4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.dvis_root is None and args.dvis_git_dir is None:
        logger.info("skipped: give --dvis-root or --dvis-git-dir (github.com/zhang-tao-whu/DVIS)")
        return 0

    from local2global.modeling.trackers.dvis import DVISTracker

    with tempfile.TemporaryDirectory(prefix="dvis_parity_") as tmp:
        work = Path(tmp)
        if not extract_official(work, args.dvis_root, args.dvis_git_dir):
            logger.info("skipped: the official files could not be read")
            return 0
        sys.path.insert(0, str(work))
        official = importlib.import_module("dvis_official.video_dvis_modules")
        report = {"official_commit": official_commit(args.dvis_root, args.dvis_git_dir), "runs": []}
        ok = True
        for dtype, atol in ((torch.float64, args.atol64), (torch.float32, args.atol32)):
            torch.manual_seed(args.seed)
            ours = DVISTracker(args.num_classes, num_queries=args.num_queries, hidden_dim=args.hidden_dim,
                               num_layers=args.num_layers, dim_feedforward=args.dim_feedforward,
                               aux_at_inference=True).to(dtype).eval()
            theirs = official.ReferringTracker(hidden_channel=args.hidden_dim,
                                               feedforward_channel=args.dim_feedforward, num_head=8,
                                               decoder_layer_num=args.num_layers, mask_dim=args.hidden_dim,
                                               class_num=args.num_classes).to(dtype).eval()
            copy_weights(ours, theirs, args.num_classes)
            gen = torch.Generator().manual_seed(args.seed)
            for regime in ("involution", "random"):
                embeds, mask_features = make_inputs(regime, args.frames, args.num_queries, args.hidden_dim,
                                                    args.mask_size, gen, dtype)
                with torch.no_grad():
                    mine = run_ours(ours, embeds, mask_features)
                    patched = regime == "random"
                    if patched:
                        unpatched = compare(mine, run_theirs(theirs, embeds, mask_features), args.num_classes)
                        theirs.match_embds = dvis_plus_match
                    ref = run_theirs(theirs, embeds, mask_features)
                    if patched:
                        del theirs.match_embds
                diffs = compare(mine, ref, args.num_classes)
                run = {"dtype": str(dtype).replace("torch.", ""), "regime": regime,
                       "match_embds": "DVIS++ orientation" if patched else "official", "max_abs_diff": diffs}
                if patched:
                    run["unpatched_max_abs_diff"] = unpatched
                report["runs"].append(run)
                ok &= max(diffs.values()) <= atol
                logger.info("%s %-10s match_embds=%-18s blocks %.3g  logits %.3g  mask_embeds %.3g  masks %.3g%s",
                            run["dtype"], regime, run["match_embds"], diffs["blocks"], diffs["logits"],
                            diffs["mask_embeds"], diffs["masks"],
                            f"  (unpatched: blocks {unpatched['blocks']:.3g})" if patched else "")
        report["parameters"] = {"ours": sum(p.numel() for p in ours.parameters()),
                                "official": sum(p.numel() for p in theirs.parameters())}
        logger.info("official commit %s; parameters ours %d, official %d (class head C vs C+1)",
                    report["official_commit"], report["parameters"]["ours"], report["parameters"]["official"])
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

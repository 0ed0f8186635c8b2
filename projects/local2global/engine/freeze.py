"""Trainable-parameter selection as a config value (``train.trainable_params``).

Patterns are ``fnmatch`` patterns on full parameter names (``"aligner.*"``, ``"decoder.decoder.ref_point_head.*"``);
a bare module path also matches everything below it (``"aligner"`` == ``"aligner.*"``). Parameters that match no
pattern get ``requires_grad=False``; matching ones keep their own setting (a backbone stage frozen by
``freeze_at`` stays frozen). ``None`` leaves the model untouched (everything the model itself does not freeze
is trained).
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Dict, Optional, Sequence, Tuple

from torch import nn

__all__ = ["matches_any", "apply_trainable_params", "count_parameters", "freeze_unused_in_image_mode"]

logger = logging.getLogger(__name__)


def matches_any(name: str, patterns: Sequence[str]) -> bool:
    """Whether a parameter name matches one of the patterns (fnmatch, or a module-path prefix)."""
    return any(fnmatch.fnmatchcase(name, p) or name.startswith(p.rstrip(".") + ".") for p in patterns)


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """(trainable, total) numbers of parameter elements."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def apply_trainable_params(model: nn.Module, patterns: Optional[Sequence[str]]) -> Dict[str, bool]:
    """Freeze every parameter that matches none of ``patterns`` and log the counts.

    Args:
        model: the module (unwrapped, before DDP and before the optimizer is built).
        patterns: fnmatch patterns of the parameters to train, or ``None`` to keep the model as it is.

    Returns:
        ``{parameter name: requires_grad}`` after the change.

    Raises:
        ValueError: a pattern that matches no parameter (a typo would otherwise silently freeze everything).
    """
    named = list(model.named_parameters())
    if patterns is not None:
        if isinstance(patterns, str):
            patterns = [patterns]
        patterns = [str(p) for p in patterns]
        names = [n for n, _ in named]
        unused = [p for p in patterns if not any(matches_any(n, [p]) for n in names)]
        if unused:
            import difflib

            hints = {p: difflib.get_close_matches(p.rstrip("*."), names, n=3, cutoff=0.5) for p in unused}
            raise ValueError(
                "train.trainable_params: pattern(s) matching no parameter of the model: "
                + "; ".join(f"{p!r} (close: {', '.join(h) or 'none'})" for p, h in hints.items())
            )
        for n, p in named:
            if not matches_any(n, patterns):
                p.requires_grad_(False)
    trainable, total = count_parameters(model)
    n_tensors = sum(1 for _, p in named if p.requires_grad)
    logger.info(
        "Trainable parameters: %d of %d (%.2f%%) in %d of %d tensors%s",
        trainable, total, 100.0 * trainable / max(total, 1), n_tensors, len(named),
        "" if patterns is None else f" (train.trainable_params={list(patterns)})",
    )
    return {n: p.requires_grad for n, p in named}


def freeze_unused_in_image_mode(model: nn.Module, num_frames: Optional[int]) -> int:
    """Freeze the tracker's parameters when training on 1-frame clips leaves all of them without a gradient.

    On a 1-frame clip every frame is a video's first frame; a tracker whose parameters do not take part in it
    (``tracker.first_frame_uses_parameters`` False: Local2Global's aligner and anchors with ``first_frame="image"``)
    gets no gradient at all. Plain training does not mind (AdamW skips parameters without a gradient, so freezing
    them changes no value), but DDP with ``find_unused_parameters=False`` (the default, and the faster setting)
    stops at the first step with "Expected to have finished reduction in the prior iteration". Freezing them makes
    image-mode warm-ups work on any number of GPUs.

    Args:
        model: the unwrapped model (before DDP and before the optimizer is built).
        num_frames: frames per training clip (``dataloader.train.mapper.num_frames``; ``None``: unknown).

    Returns:
        the number of parameter elements frozen (0 when nothing was done).
    """
    tracker = getattr(model, "tracker", None)
    if num_frames != 1 or tracker is None or getattr(tracker, "first_frame_uses_parameters", True):
        return 0
    params = [p for p in tracker.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in params)
    if frozen:
        logger.info("1-frame clips (image mode): the tracker's %d parameters (%s) take no part and are frozen",
                    frozen, type(tracker).__name__)
    return frozen

"""Point sampling for the mask costs and mask losses (PointRend-style, as MaskDINO uses it).

MaskDINO evaluates its mask matching costs and mask losses on a set of points instead of on the
full masks: the matcher draws uniformly random points shared by all masks of an image, the loss
draws per-mask points with importance sampling of uncertain locations. Both read values with
``grid_sample`` at normalised coordinates ``(x, y)`` in ``[0, 1]^2``; the same coordinate denotes
the same physical location in a prediction at 1/4 resolution and in a target at full resolution.

This module re-implements detectron2's ``point_sample`` / ``get_uncertain_point_coords_with_randomness``
with an optional ``torch.Generator`` (detectron2's versions always use the global RNG), so that a
training run can be made deterministic and resumable. With ``generator=None`` the random draws are
the same calls, in the same order and shapes, as detectron2's, so a global ``torch.manual_seed``
gives identical points.

It also provides the dense mode (``num_points=None`` in the matcher / criterion): every pixel
centre of the prediction grid is a point; targets are bilinearly resized to that grid.
"""

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "point_sample",
    "calculate_uncertainty",
    "rand_on",
    "get_uncertain_point_coords_with_randomness",
    "resize_masks_to_grid",
]


def point_sample(input: torch.Tensor, point_coords: torch.Tensor, **kwargs) -> torch.Tensor:
    """Bilinearly read ``input`` at normalised point coordinates.

    Args:
        input: ``(N, C, H, W)`` feature / logit / mask map.
        point_coords: ``(N, P, 2)`` or ``(N, Hg, Wg, 2)`` coordinates ``(x, y)`` in ``[0, 1]``.
        **kwargs: forwarded to ``F.grid_sample`` (MaskDINO passes ``align_corners=False``).

    Returns:
        ``(N, C, P)`` (or ``(N, C, Hg, Wg)`` for grid-shaped coordinates).
    """
    add_dim = point_coords.dim() == 3
    if add_dim:
        point_coords = point_coords.unsqueeze(2)
    # grid_sample expects coordinates in [-1, 1].
    output = F.grid_sample(input, 2.0 * point_coords - 1.0, **kwargs)
    if add_dim:
        output = output.squeeze(3)
    return output


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of class-agnostic mask logits: ``-|logit|`` (highest at the decision boundary).

    Args:
        logits: ``(R, 1, ...)`` mask logits.

    Returns:
        Tensor of the same shape.
    """
    if logits.shape[1] != 1:
        raise ValueError(f"expected class-agnostic logits (R, 1, ...), got {tuple(logits.shape)}")
    return -torch.abs(logits)


def rand_on(
    shape: Sequence[int],
    like: torch.Tensor,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Uniform ``[0, 1)`` samples with ``like``'s device/dtype, drawn from ``generator`` if given.

    The draw happens on the generator's own device (a CPU generator can serve a CUDA run) and is
    then moved, so that the random stream depends only on the generator, not on where the model runs.

    Args:
        shape: output shape.
        like: tensor providing device and dtype.
        generator: optional ``torch.Generator``; ``None`` uses the global RNG of ``like``'s device.
    """
    if generator is None:
        return torch.rand(*shape, device=like.device, dtype=like.dtype)
    sample = torch.rand(*shape, generator=generator, device=generator.device, dtype=like.dtype)
    return sample.to(like.device)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """PointRend importance sampling of training points (per mask).

    Draws ``int(num_points * oversample_ratio)`` uniform candidates, keeps the
    ``int(importance_sample_ratio * num_points)`` most uncertain ones and adds
    ``num_points - that`` fresh uniform points.

    Args:
        coarse_logits: ``(R, 1, h, w)`` mask logits.
        uncertainty_func: maps ``(R, 1, P)`` point logits to ``(R, 1, P)`` uncertainty.
        num_points: points per mask.
        oversample_ratio: candidate oversampling factor (>= 1).
        importance_sample_ratio: fraction of points chosen by uncertainty (in ``[0, 1]``).
        generator: optional ``torch.Generator`` for all random draws.

    Returns:
        ``(R, num_points, 2)`` coordinates ``(x, y)`` in ``[0, 1]``.
    """
    if oversample_ratio < 1:
        raise ValueError("oversample_ratio must be >= 1")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError("importance_sample_ratio must be in [0, 1]")
    num_masks = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    candidates = rand_on((num_masks, num_sampled, 2), coarse_logits, generator)
    candidate_logits = point_sample(coarse_logits, candidates, align_corners=False)
    uncertainty = uncertainty_func(candidate_logits)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    top = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1)[1]
    coords = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, rand_on((num_masks, num_random, 2), coarse_logits, generator)], dim=1)
    return coords


def resize_masks_to_grid(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Dense-mode targets: bilinear resize of (padded, full-resolution) masks to the prediction grid.

    This is exactly reading every target at the pixel centres of the prediction grid with
    ``align_corners=False`` (README §10.3 of the MaskDINO reference): with a factor-4 grid each
    value is the mean of the central 2x2 pixels of a 4x4 block, not an area average.

    Args:
        masks: ``(M, H, W)`` float masks (already converted to the prediction dtype).
        size: ``(h, w)`` of the prediction grid.

    Returns:
        ``(M, h * w)`` flattened row-major (point index ``i * w + j``).
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, size[0] * size[1]))
    if tuple(masks.shape[-2:]) == tuple(size):
        # already on the grid (e.g. resized once per clip by VideoSetCriterion): a same-size bilinear resize
        # with align_corners=False reads every pixel centre exactly, i.e. it is the identity
        return masks.flatten(1)
    resized = F.interpolate(masks[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    return resized.flatten(1)

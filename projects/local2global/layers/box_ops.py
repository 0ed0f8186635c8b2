"""Box utilities shared by the segmenter, the matcher and criteria, the trackers and the meta-architecture.

Conventions (docs/ARCHITECTURE.md): boxes crossing module boundaries are normalised ``(cx, cy, w, h)`` in
``[0, 1]``; ``_unsig`` names hold ``inverse_sigmoid`` of them; ``_xyxy`` names hold corner boxes.

Numerics follow detrex's MaskDINO (``projects/maskdino/utils``) so that the parity fixture in
``tests/data/maskdino`` is reproduced:

* :func:`inverse_sigmoid` clamps to ``[0, 1]`` and guards both logs' arguments with ``eps = 1e-5``;
* :func:`box_sine_embedding` is MaskDINO's query sine embedding (blocks ``y, x, w, h``, interleaved sin/cos,
  ``t_i = T ** (2 * floor(i / 2) / F)``, scale ``2 pi``), with the number of frequencies ``F`` per coordinate
  as an argument (detrex hard-codes 128 = hidden / 2 at hidden 256);
* :func:`mask2box` is MaskDINO's ``initialize_box_type="mask2box"`` conversion (tight box of ``logit > 0`` in
  pixel indices, inclusive ``x_max`` / ``y_max`` without ``+1``, divided by ``(w, h, w, h)``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from torchvision.ops import box_convert

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "inverse_sigmoid",
    "box_sine_embedding",
    "masks_to_boxes_xyxy",
    "mask2box",
    "EMPTY_MASK_MIN",
]

#: Guard added to the union and to the enclosing area in MaskDINO's GIoU (differs from torchvision).
GIOU_EPS = 1e-6


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre/size boxes to corner boxes ``(x0, y0, x1, y1)`` (``torchvision.ops.box_convert``)."""
    return box_convert(boxes, "cxcywh", "xyxy")


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU, MaskDINO's variant.

    Differs from ``torchvision.ops.generalized_box_iou`` by the ``+1e-6`` in both divisions
    (``iou = inter / (union + 1e-6)``, ``giou = iou - (encl - union) / (encl + 1e-6)``); kept here
    so costs and losses reproduce detrex's to float32 rounding.

    Args:
        boxes1: ``(N, 4)`` xyxy boxes.
        boxes2: ``(M, 4)`` xyxy boxes.

    Returns:
        ``(N, M)`` GIoU in ``[-1, 1]``.
    """
    if not bool((boxes1[:, 2:] >= boxes1[:, :2]).all()) or not bool((boxes2[:, 2:] >= boxes2[:, :2]).all()):
        raise ValueError("generalized_box_iou needs boxes with x1 >= x0 and y1 >= y0")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    inter_lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    inter_rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    inter_wh = (inter_rb - inter_lt).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area1[:, None] + area2 - inter
    iou = inter / (union + GIOU_EPS)
    encl_lt = torch.min(boxes1[:, None, :2], boxes2[:, :2])
    encl_rb = torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
    encl_wh = (encl_rb - encl_lt).clamp(min=0)
    encl = encl_wh[..., 0] * encl_wh[..., 1]
    return iou - (encl - union) / (encl + GIOU_EPS)


#: Value detrex's ``masks_to_boxes`` puts in ``x_min`` / ``y_min`` of an empty mask (its ``max`` is 0).
EMPTY_MASK_MIN = 1e8


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` corner boxes ``(x0, y0, x1, y1)`` to centre/size boxes ``(cx, cy, w, h)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit with MaskDINO's guards: ``log(clamp(x, eps) / clamp(1 - x, eps))`` after clamping ``x`` to [0, 1].

    Args:
        x: any shape, values nominally in ``[0, 1]``.
        eps: lower bound of both the numerator and the denominator.

    Returns:
        Same shape as ``x``; finite, in ``[log(eps), -log(eps)]``.
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_sine_embedding(boxes: Tensor, num_pos_feats: int = 128, temperature: float = 10000.0,
                       scale: float = 2 * math.pi) -> Tensor:
    """Sine embedding of normalised points or boxes (MaskDINO's ``gen_sineembed_for_position``).

    Each coordinate ``c`` gives a block ``[sin(s c / t_0), cos(s c / t_1), sin(s c / t_2), cos(s c / t_3), ...]``
    with ``t_i = temperature ** (2 * floor(i / 2) / num_pos_feats)`` and ``s = scale``; the blocks are
    concatenated in the order ``(y, x)`` for points and ``(y, x, w, h)`` for boxes.

    Args:
        boxes: ``(..., 2)`` normalised ``(x, y)`` or ``(..., 4)`` normalised ``(cx, cy, w, h)``.
        num_pos_feats: frequencies per coordinate ``F`` (even). ``hidden_dim / 2`` for the decoder's
            ``ref_point_head`` (128 at hidden 256).
        temperature: ``T``.
        scale: multiplier of the coordinates (``2 pi``).

    Returns:
        ``(..., 2F)`` for points, ``(..., 4F)`` for boxes, dtype of ``boxes`` (float32 for integer input).
    """
    if boxes.shape[-1] not in (2, 4):
        raise ValueError(f"box_sine_embedding expects (..., 2) points or (..., 4) boxes, got {tuple(boxes.shape)}")
    if num_pos_feats % 2 != 0:
        raise ValueError(f"num_pos_feats must be even (sin/cos pairs), got {num_pos_feats}")
    dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    boxes = boxes.to(dtype)
    idx = torch.arange(num_pos_feats, dtype=torch.float32, device=boxes.device)
    dim_t = (temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / num_pos_feats)).to(dtype)

    def embed(coord: Tensor) -> Tensor:
        pos = (coord * scale)[..., None] / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    blocks = [embed(boxes[..., 1]), embed(boxes[..., 0])]
    if boxes.shape[-1] == 4:
        blocks += [embed(boxes[..., 2]), embed(boxes[..., 3])]
    return torch.cat(blocks, dim=-1)


def masks_to_boxes_xyxy(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks in pixel indices (detrex MaskDINO's ``masks_to_boxes``).

    ``x_max`` / ``y_max`` are the inclusive last indices (no ``+1``). An empty mask gives
    ``(1e8, 1e8, 0, 0)``, as detrex's.

    Args:
        masks: ``(..., h, w)`` bool (or 0/1) masks.

    Returns:
        ``(..., 4)`` float32 ``(x_min, y_min, x_max, y_max)``.
    """
    masks = masks.bool()
    h, w = masks.shape[-2:]
    cols = masks.any(dim=-2)  # (..., w)
    rows = masks.any(dim=-1)  # (..., h)
    x = torch.arange(w, dtype=torch.float32, device=masks.device)
    y = torch.arange(h, dtype=torch.float32, device=masks.device)
    big = torch.tensor(EMPTY_MASK_MIN, dtype=torch.float32, device=masks.device)
    zero = torch.zeros((), dtype=torch.float32, device=masks.device)
    x_min = torch.where(cols, x, big).amin(dim=-1)
    x_max = torch.where(cols, x, zero).amax(dim=-1)
    y_min = torch.where(rows, y, big).amin(dim=-1)
    y_max = torch.where(rows, y, zero).amax(dim=-1)
    return torch.stack([x_min, y_min, x_max, y_max], dim=-1)


def mask2box(mask_logits: Tensor, fallback_boxes: Optional[Tensor] = None) -> Tensor:
    """Mask2Box: normalised tight boxes of ``mask_logits > 0`` (MaskDINO's mask-enhanced box initialisation).

    The box is computed in pixel indices of the mask grid (``x_max`` / ``y_max`` inclusive, no ``+1``),
    converted to ``(cx, cy, w, h)`` and divided by ``(w, h, w, h)`` of the grid, exactly as detrex's
    ``initialize_box_type="mask2box"``. No gradient flows (the binarisation is piecewise constant).

    Args:
        mask_logits: ``(B, N, h, w)`` mask logits.
        fallback_boxes: optional ``(B, N, 4)`` normalised cxcywh boxes. Rows whose mask is empty take this box
            (SPEC §3: an empty mask keeps the slot's previous box). Without it an empty mask gives detrex's
            degenerate box (``x_min = y_min = 1e8``, ``x_max = y_max = 0`` before the conversion: a huge centre
            and a negative size, which :func:`inverse_sigmoid` clamps).

    Returns:
        ``(B, N, 4)`` normalised cxcywh, float32 (float64 for float64 input).
    """
    if mask_logits.dim() != 4:
        raise ValueError(f"mask2box expects (B, N, h, w) mask logits, got shape {tuple(mask_logits.shape)}")
    h, w = mask_logits.shape[-2:]
    binary = mask_logits.detach() > 0
    boxes = box_xyxy_to_cxcywh(masks_to_boxes_xyxy(binary))
    boxes = boxes / torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
    out_dtype = torch.promote_types(mask_logits.dtype, torch.float32)
    boxes = boxes.to(out_dtype)
    if fallback_boxes is not None:
        if fallback_boxes.shape != boxes.shape:
            raise ValueError(f"fallback_boxes must have shape {tuple(boxes.shape)} (B, N, 4), "
                             f"got {tuple(fallback_boxes.shape)}")
        empty = ~binary.flatten(-2).any(dim=-1)
        boxes = torch.where(empty[..., None], fallback_boxes.to(out_dtype), boxes)
    return boxes

"""MaskDINO's denoising (DN) queries for image training (detrex ``prepare_for_dn`` / ``dn_post_process``).

Every ground-truth object is repeated in ``scalar = dn_num // max_objects_per_image`` groups. Each copy becomes
a query whose content is ``label_enc(noisy label)`` and whose reference box is ``inverse_sigmoid(noisy box)``:

* label noise: with probability ``noise_scale / 2`` the label is replaced by a uniformly random class;
* box noise: ``box += U(-1, 1) * (w/2, h/2, w, h) * noise_scale``, clamped to ``[0, 1]``.

The DN queries are placed before the matching queries (``pad_size = scalar * max_objects`` of them, padding
slots are zero content / zero box). The self-attention mask forbids matching queries to see DN queries and
every DN group to see the other groups. After decoding, :func:`dn_post_process` splits predictions into the
matching part and the ``mask_dict["output_known_lbs_bboxes"]`` the criterion's ``_dn`` losses read.

Random numbers come from torch's global generator (or ``generator``) in detrex's order: labels ``rand``,
new labels ``randint``, box ``rand``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from local2global.layers.box_ops import inverse_sigmoid

__all__ = ["DenoisingQueries", "prepare_for_dn", "dn_attention_mask", "dn_post_process"]


@dataclass
class DenoisingQueries:
    """DN queries of a batch.

    Attributes:
        tgt: ``(B, pad_size, D)`` query contents.
        refpoints_unsig: ``(B, pad_size, 4)`` unsigmoided reference boxes.
        attn_mask: ``(pad_size + num_queries, pad_size + num_queries)`` bool, True = attention not allowed.
        mask_dict: detrex's bookkeeping dict (``known_indice``, ``batch_idx``, ``map_known_indice``,
            ``known_lbs_bboxes``, ``know_idx``, ``pad_size``, ``scalar``).
    """

    tgt: Tensor
    refpoints_unsig: Tensor
    attn_mask: Tensor
    mask_dict: Dict


def dn_attention_mask(single_pad: int, scalar: int, num_queries: int, device=None) -> Tensor:
    """Self-attention mask of ``scalar`` DN groups of ``single_pad`` queries followed by ``num_queries``.

    Returns:
        ``(T, T)`` bool with ``T = single_pad * scalar + num_queries``; True where attention is blocked:
        matching queries -> every DN query, DN group g -> every other DN group (DN queries see the matching ones).
    """
    pad_size = single_pad * scalar
    size = pad_size + num_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[pad_size:, :pad_size] = True
    for g in range(scalar):
        rows = slice(single_pad * g, single_pad * (g + 1))
        mask[rows, : single_pad * g] = True
        mask[rows, single_pad * (g + 1): pad_size] = True
    return mask


def prepare_for_dn(targets: Sequence[Dict[str, Tensor]], label_enc: nn.Embedding, *, dn_num: int,
                   noise_scale: float, num_classes: int, num_queries: int,
                   generator: Optional[torch.Generator] = None) -> Optional[DenoisingQueries]:
    """Build the DN queries of a training batch.

    Args:
        targets: per image ``{"labels": (n,) int64, "boxes": (n, 4) normalised cxcywh}``.
        label_enc: the decoder's ``label_enc`` embedding (``num_classes x D``).
        dn_num: total DN queries budget (detrex ``dn_num``).
        noise_scale: box/label noise scale (detrex ``noise_scale``).
        num_classes: C (range of the random labels).
        num_queries: number of matching queries that follow the DN queries.
        generator: optional torch generator for the noise (default: the global one, as detrex).

    Returns:
        :class:`DenoisingQueries`, or ``None`` when the batch has no object (or ``dn_num`` < max objects).
    """
    if len(targets) == 0:
        return None
    weight = label_enc.weight
    device = weight.device
    known_num = [int(len(t["labels"])) for t in targets]
    max_known = max(known_num)
    if max_known == 0:
        return None
    scalar = dn_num // max_known
    if scalar == 0:
        return None
    batch_size = len(targets)
    labels = torch.cat([t["labels"] for t in targets]).to(device)
    boxes = torch.cat([t["boxes"] for t in targets]).to(device=device, dtype=weight.dtype)
    batch_idx = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device) for i, n in enumerate(known_num)])
    known_indice = torch.arange(labels.numel(), device=device)
    known_indice_rep = known_indice.repeat(scalar)
    known_labels = labels.repeat(scalar)
    known_bid = batch_idx.repeat(scalar)
    known_boxes = boxes.repeat(scalar, 1)
    noisy_labels = known_labels.clone()
    noisy_boxes = known_boxes.clone()
    if noise_scale > 0:
        p = torch.rand(noisy_labels.shape, device=device, generator=generator)
        chosen = torch.nonzero(p < noise_scale * 0.5).view(-1)
        new_label = torch.randint(0, num_classes, chosen.shape, device=device, generator=generator,
                                  dtype=chosen.dtype)
        noisy_labels.scatter_(0, chosen, new_label)
        diff = torch.cat([noisy_boxes[:, 2:] / 2, noisy_boxes[:, 2:]], dim=1)
        rnd = torch.rand(noisy_boxes.shape, device=device, generator=generator, dtype=noisy_boxes.dtype)
        noisy_boxes = (noisy_boxes + (rnd * 2 - 1.0) * diff * noise_scale).clamp(min=0.0, max=1.0)
    label_embed = label_enc(noisy_labels.long())
    box_embed = inverse_sigmoid(noisy_boxes)

    single_pad = max_known
    pad_size = single_pad * scalar
    tgt = weight.new_zeros(batch_size, pad_size, weight.shape[1])
    refpoints = weight.new_zeros(batch_size, pad_size, 4)
    per_image = torch.cat([torch.arange(n, device=device) for n in known_num])
    map_known_indice = torch.cat([per_image + single_pad * g for g in range(scalar)]).long()
    tgt = tgt.index_put((known_bid, map_known_indice), label_embed)
    refpoints = refpoints.index_put((known_bid, map_known_indice), box_embed)
    mask_dict = {
        "known_indice": known_indice_rep.long(),
        "batch_idx": batch_idx.long(),
        "map_known_indice": map_known_indice,
        "known_lbs_bboxes": (known_labels, known_boxes),
        "know_idx": [torch.arange(n, device=device).unsqueeze(1) for n in known_num],
        "pad_size": pad_size,
        "scalar": scalar,
    }
    attn_mask = dn_attention_mask(single_pad, scalar, num_queries, device=device)
    return DenoisingQueries(tgt=tgt, refpoints_unsig=refpoints, attn_mask=attn_mask, mask_dict=mask_dict)


def _aux(logits: Sequence[Tensor], masks: Sequence[Tensor], boxes: Sequence[Tensor]) -> List[Dict[str, Tensor]]:
    return [{"pred_logits": a, "pred_masks": b, "pred_boxes": c}
            for a, b, c in zip(logits[:-1], masks[:-1], boxes[:-1])]


def dn_post_process(pred_logits: Sequence[Tensor], pred_masks: Sequence[Tensor], pred_boxes: Sequence[Tensor],
                    mask_dict: Dict) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
    """Split per-stage predictions into DN and matching parts.

    Args:
        pred_logits / pred_masks / pred_boxes: per stage (initial prediction first) ``(B, pad_size + N, ...)``.
        mask_dict: from :func:`prepare_for_dn`; receives ``output_known_lbs_bboxes`` (a MaskDINO prediction dict of
            the DN queries with ``aux_outputs``).

    Returns:
        The per-stage lists restricted to the ``N`` matching queries.
    """
    pad = int(mask_dict["pad_size"])
    if pad <= 0:
        raise ValueError("dn_post_process needs mask_dict['pad_size'] > 0")
    known_logits = [x[:, :pad] for x in pred_logits]
    known_masks = [x[:, :pad] for x in pred_masks]
    known_boxes = [x[:, :pad] for x in pred_boxes]
    mask_dict["output_known_lbs_bboxes"] = {
        "pred_logits": known_logits[-1], "pred_boxes": known_boxes[-1], "pred_masks": known_masks[-1],
        "aux_outputs": _aux(known_logits, known_masks, known_boxes),
    }
    return ([x[:, pad:] for x in pred_logits], [x[:, pad:] for x in pred_masks], [x[:, pad:] for x in pred_boxes])

"""The tracker interface: how the queries and identities of frame t-1 become those of frame t.

The meta-architecture (:class:`~local2global.modeling.meta_arch.Local2Global`) owns the shared segmenter
(backbone, pixel encoder, MaskDINO decoder) and receives one :class:`Tracker` (constructor injection). Per frame
it runs the segmenter up to the decoder's input, asks the tracker what the decoder should receive, runs the
decoder, and hands the decoder's output back to the tracker, which returns the frame's predictions *in slot
order* (slot i = the same instance for the whole video) and the state carried to the next frame::

    ctx   = FrameContext(decoder, memory, mask features, top-K local queries [, their Mask2Box boxes])
    query = tracker.decoder_input(state, ctx)          -> DecoderQueries(tgt (B,N,D), ref_boxes (B,N,4))
    out   = decoder.decode(query.tgt, inverse_sigmoid(query.ref_boxes), ...)
    state, outputs = tracker.update(state, ctx, query, out)

Two families fit this:

* **in-decoder propagation** (``family = "propagation"``): what enters the decoder at t depends on t-1
  (Local2Global, the plain-propagation baselines, InsPro-style). These consume the *pre-norm* state of the last
  decoder layer (``DecoderOutput.hs_prenorm_last``: the tensor a further decoder layer would receive) and train
  the segmenter with them (``trains_segmenter = True``).
* **post-decoder association** (``family = "association"``): the decoder runs MaskDINO's image mode on every
  frame (:meth:`Tracker.decoder_input` returns the top-K local queries and their Mask2Box boxes) and the tracker
  links or refines its outputs afterwards (MinVIS, DVIS). These consume the *normed* decoder output
  (``DecoderOutput.hs[-1]``, what MaskDINO's heads see), as MinVIS and DVIS take the segmenter's output
  query embeddings; they usually run on a frozen segmenter (``trains_segmenter = False``: the meta-architecture
  then keeps the segmenter in eval mode, without gradients, and only the tracker's parameters train).

Every tracker streams: its state holds tensors of a size that does not depend on the video length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from local2global.layers.box_ops import mask2box
from local2global.modeling.segmenter.query_selection import SelectedQueries

__all__ = ["Tracker", "FrameContext", "DecoderQueries", "TRACKER_FAMILIES", "state_nbytes", "image_mode_queries",
           "decoder_mask_embeddings", "frame_boxes"]

TRACKER_FAMILIES = ("propagation", "association")


@dataclass
class FrameContext:
    """What the shared segmenter computed for one frame before its decoder runs.

    Attributes:
        decoder: the meta-architecture's :class:`~local2global.modeling.segmenter.decoder.MaskDINODecoder` (its
            ``query_pos`` embeds boxes, its ``predict`` applies the shared heads).
        bundle: the frame's decoder memory (:class:`~local2global.modeling.segmenter.decoder.MemoryBundle`).
        mask_features: ``(B, D, H/4, W/4)``.
        selected: the top-K local queries of this frame (``queries (B, K, D)`` detached, ``coords_unsig``), or
            ``None`` when the tracker did not ask for them (:meth:`Tracker.needs_local_queries`).
        local_boxes: ``(B, K, 4)`` normalised cxcywh Mask2Box boxes of the local queries' encoder-stage masks
            (detached; MaskDINO's image-mode references), or ``None`` when not computed.
        frame_index: index of the frame in the clip / video (0 = first).
        want_mask_embeds: the criterion needs each slot's mask embedding (``outputs["mask_embeds"] (B, N, Dm)``,
            with ``pred_masks = einsum("bnc,bchw->bnhw", mask_embeds, mask_features)``) to predict the slot's mask
            on the clip's other frames (IFR's cross-frame mask loss). Trackers add it when True.
    """

    decoder: nn.Module
    bundle: Any
    mask_features: Tensor
    selected: Optional[SelectedQueries]
    local_boxes: Optional[Tensor]
    frame_index: int
    want_mask_embeds: bool = False

    @property
    def batch(self) -> int:
        return self.mask_features.shape[0]


@dataclass
class DecoderQueries:
    """What the decoder receives at frame t.

    Attributes:
        tgt: ``(B, N, D)`` content queries.
        ref_boxes: ``(B, N, 4)`` normalised cxcywh initial reference boxes (in [0, 1]).
        image_mode: True when this is MaskDINO's image mode (top-K local queries and their boxes): the frame on
            which the meta-architecture adds MaskDINO's denoising queries in training.
    """

    tgt: Tensor
    ref_boxes: Tensor
    image_mode: bool = False


def image_mode_queries(ctx: FrameContext) -> DecoderQueries:
    """MaskDINO's image mode: the top-K local queries, references Mask2Box of their encoder-stage masks."""
    if ctx.selected is None or ctx.local_boxes is None:
        raise RuntimeError("image mode needs the local queries and their Mask2Box boxes: the tracker must ask for "
                           "them (needs_local_queries / needs_local_boxes)")
    return DecoderQueries(ctx.selected.queries, ctx.local_boxes, image_mode=True)


def decoder_mask_embeddings(decoder: nn.Module, hs: Tensor) -> Tensor:
    """``(B, N, Dm)`` mask embeddings of the shared heads for decoder states ``hs (B, N, D)``.

    The same computation as :meth:`MaskDINODecoder.predict` up to the product with the mask features, so that
    ``einsum("bnc,bchw->bnhw", embeds, mask_features)`` equals its mask logits.
    """
    return decoder.mask_embed(decoder.decoder_norm(hs))


def frame_boxes(pred_masks: Tensor, fallback: Tensor) -> Tensor:
    """Mask2Box of a frame's final masks (detached); an empty mask keeps ``fallback`` (clamped to [0, 1])."""
    return mask2box(pred_masks.detach(), fallback_boxes=fallback.detach().clamp(0.0, 1.0))


class Tracker(nn.Module):
    """Base class of every tracker (see the module docstring for the two families).

    Subclasses set ``family`` and ``trains_segmenter`` and implement :meth:`decoder_input` and :meth:`update`.
    The state is any object (a dataclass of tensors is recommended: :func:`state_nbytes` measures it); ``None``
    is the state before the first frame.
    """

    family: ClassVar[str] = "propagation"
    #: False: the segmenter is frozen (eval mode, no gradients) while this tracker trains.
    trains_segmenter: ClassVar[bool] = True

    @property
    def first_frame_uses_parameters(self) -> bool:
        """Whether the tracker's own parameters take part in the first frame of a video (``state is None``).

        When they do not, training on 1-frame clips (an image-mode warm-up) leaves every one of them without a
        gradient, which DDP with ``find_unused_parameters=False`` rejects; the trainer then freezes them
        (:func:`local2global.engine.freeze.freeze_unused_in_image_mode`). Conservative default: True.
        """
        return True

    def needs_local_queries(self, state: Any) -> bool:
        """Whether frame t needs the top-K local queries (the encoder's two-stage token head)."""
        return True

    def needs_local_boxes(self, state: Any) -> bool:
        """Whether frame t needs Mask2Box of the local queries' encoder-stage masks (image-mode references)."""
        return state is None

    def decoder_input(self, state: Any, ctx: FrameContext) -> DecoderQueries:
        """The decoder's queries and reference boxes at this frame. Default: MaskDINO's image mode."""
        return image_mode_queries(ctx)

    def update(self, state: Any, ctx: FrameContext, queries: DecoderQueries, decoded
               ) -> Tuple[Any, Dict]:
        """Turn the decoder's output into this frame's predictions in slot order and the next state.

        Args:
            state: the state of frame t-1 (``None`` at the first frame).
            ctx: this frame's :class:`FrameContext`.
            queries: what :meth:`decoder_input` returned (after the denoising queries were split off).
            decoded: the decoder's :class:`~local2global.modeling.segmenter.decoder.DecoderOutput`.

        Returns:
            ``(state_t, outputs)``; ``outputs`` is MaskDINO's prediction dict (``pred_logits (B, N, C)``,
            ``pred_masks (B, N, h, w)``, ``pred_boxes (B, N, 4)``, ``aux_outputs``) with slot i of every frame
            the same track, as the criterion and the post-processor expect.
        """
        raise NotImplementedError

    def extra_parameter_count(self) -> int:
        """Parameters this tracker adds to the segmenter (the figure the papers report)."""
        return sum(p.numel() for p in self.parameters())


def state_nbytes(state: Any) -> int:
    """Bytes held by the tensors of a tracker state (dataclass, tuple, list, dict or tensor), recursively."""
    if state is None:
        return 0
    if torch.is_tensor(state):
        return state.numel() * state.element_size()
    if dataclasses.is_dataclass(state):
        return sum(state_nbytes(getattr(state, f.name)) for f in dataclasses.fields(state))
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0

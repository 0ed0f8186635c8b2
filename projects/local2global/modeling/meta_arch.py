"""Local2Global: the online video instance segmentation meta-architecture.

The meta-architecture receives built modules (constructor injection) and only wires the data flow of SPEC §2:

```
frames (B×T×3×H×W) -> backbone -> pixel encoder           all B·T frames in one batch
for t in 0..T-1:                                             sequential, online
    query selector: top-K tokens -> q_local (detached), their boxes
    aligner(q_global, q_local, g_pos, l_pos) -> q_global'    (skipped when aligner is None)
    decoder(q_global', reference boxes, memory) -> outputs_t
    state <- (last layer's un-normalised queries, Mask2Box(final masks).detach())
criterion(outputs_0..T-1, targets)
```

Frame 0 (``first_frame="image"``) is MaskDINO's image mode: the decoder's queries are the top-K local queries
and its references Mask2Box of the encoder-stage masks; the aligner does not run. When the decoder is built with
denoising (``decoder.dn != "no"``), training adds MaskDINO's denoising queries to frame 0 (the image-mode frame)
only; they never enter the propagated state. ``first_frame="learned"``
(COCO pre-training of the aligner) aligns a learnable ``N×D`` embedding with the local queries instead.

``global_pos="trajectory"`` (default) takes g_pos and the decoder's initial references at t from Mask2Box of the
masks of t-1; ``"static"`` uses learnable per-slot anchor boxes that are not propagated (Table 3 row without
trajectory). ``aligner=None`` is the Table 3 baseline: propagated queries go straight into the decoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import ImageList
from torch import Tensor, nn

from .box_ops import box_xyxy_to_cxcywh, inverse_sigmoid, mask2box
from .checkpoint import register_detrex_key_mapping
from .postprocess import FrameInstances, VideoPostprocessor

__all__ = ["Local2Global", "TrackState", "FIRST_FRAME_MODES", "GLOBAL_POS_MODES"]

logger = logging.getLogger(__name__)

FIRST_FRAME_MODES = ("image", "learned")
GLOBAL_POS_MODES = ("trajectory", "static")

# Initial size of the learnable static anchor boxes (normalised w, h), as DAB-DETR-style anchors start small.
_STATIC_ANCHOR_INIT_WH = 0.1


@dataclass
class TrackState:
    """What is carried from frame t-1 to frame t: O(N·D), independent of the video length.

    Attributes:
        queries: ``(B, N, D)`` un-normalised output of the last decoder layer (SPEC §3 "propagated query").
        boxes: ``(B, N, 4)`` normalised cxcywh Mask2Box of the last masks, detached.
    """

    queries: Tensor
    boxes: Tensor

    def detach(self) -> "TrackState":
        return TrackState(self.queries.detach(), self.boxes.detach())


class Local2Global(nn.Module):
    """Online VIS with local-to-global query alignment.

    Args:
        backbone: detectron2 ``Backbone`` returning ``res2..res5``.
        pixel_decoder: :class:`~local2global.modeling.pixel_decoder.MaskDINOEncoder` (or compatible).
        decoder: :class:`~local2global.modeling.decoder.MaskDINODecoder` (or compatible step API).
        criterion: :class:`~local2global.modeling.video_criterion.VideoSetCriterion`; returns weighted losses.
        query_selector: picks the top-K local queries; ``None`` uses the decoder's own selector.
        aligner: :class:`~local2global.modeling.aligner.L2GAligner`, or ``None`` for the baseline.
        postprocessor: :class:`~local2global.modeling.postprocess.VideoPostprocessor` (test top-k etc.).
        num_queries: ``N`` global slots (must equal the decoder's number of queries).
        num_classes / hidden_dim: optional; checked against the decoder (configs interpolate the decoder's
            values from these, so one override changes every module).
        pixel_mean / pixel_std: input normalisation, RGB (MaskDINO's: torchvision-style weights).
        size_divisibility: padding multiple of the network input.
        first_frame: ``"image"`` (MaskDINO image mode at t = 0) or ``"learned"`` (learnable global embedding).
        global_pos: ``"trajectory"`` (Mask2Box propagation) or ``"static"`` (learnable per-slot anchors).
        interm_loss_every_frame: compute the encoder ("interm") predictions at t > 0 in training too, so the
            criterion's image-level encoder loss sees every frame.
    """

    def __init__(self, *, backbone: nn.Module, pixel_decoder: nn.Module, decoder: nn.Module,
                 criterion: Optional[nn.Module] = None, query_selector: Optional[nn.Module] = None,
                 aligner: Optional[nn.Module] = None, postprocessor: Optional[VideoPostprocessor] = None,
                 num_queries: int = 300, num_classes: Optional[int] = None, hidden_dim: Optional[int] = None,
                 pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375), size_divisibility: int = 32,
                 first_frame: str = "image", global_pos: str = "trajectory",
                 interm_loss_every_frame: bool = True):
        super().__init__()
        if first_frame not in FIRST_FRAME_MODES:
            raise ValueError(f"first_frame must be one of {FIRST_FRAME_MODES}, got {first_frame!r}")
        if global_pos not in GLOBAL_POS_MODES:
            raise ValueError(f"global_pos must be one of {GLOBAL_POS_MODES}, got {global_pos!r}")
        if first_frame == "learned" and aligner is None:
            raise ValueError("first_frame='learned' aligns a learnable embedding with the local queries: "
                             "it needs an aligner (got aligner=None)")
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self.query_selector = query_selector if query_selector is not None else decoder.query_selector
        self.aligner = aligner
        self.criterion = criterion
        self.postprocessor = postprocessor if postprocessor is not None else VideoPostprocessor()
        self.num_queries = num_queries
        self.size_divisibility = size_divisibility
        self.first_frame = first_frame
        self.global_pos = global_pos
        self.interm_loss_every_frame = interm_loss_every_frame
        dec_queries = getattr(decoder, "num_queries", num_queries)
        if dec_queries != num_queries:
            raise ValueError(f"model.num_queries={num_queries} but the decoder selects {dec_queries} queries; "
                             "set both (configs interpolate one from the other)")
        if num_classes is not None and num_classes != decoder.num_classes:
            raise ValueError(f"model.num_classes={num_classes} but the decoder has {decoder.num_classes} classes")
        if hidden_dim is not None and hidden_dim != decoder.hidden_dim:
            raise ValueError(f"model.hidden_dim={hidden_dim} but the decoder is {decoder.hidden_dim} wide")
        hidden_dim = decoder.hidden_dim
        if aligner is not None and getattr(aligner, "d_model", hidden_dim) != hidden_dim:
            raise ValueError(f"aligner width {aligner.d_model} != decoder hidden_dim {hidden_dim}")

        # The learnable first-frame embedding (phase 1) and the static anchors only exist when used, so the
        # default model's state dict is MaskDINO's plus the aligner.
        self.global_query_embed = nn.Embedding(num_queries, hidden_dim) if first_frame == "learned" else None
        if global_pos == "static":
            self.anchor_boxes = nn.Embedding(num_queries, 4)
            with torch.no_grad():
                xy = torch.rand(num_queries, 2)
                wh = torch.full((num_queries, 2), _STATIC_ANCHOR_INIT_WH)
                self.anchor_boxes.weight.copy_(inverse_sigmoid(torch.cat([xy, wh], dim=1)))
        else:
            self.anchor_boxes = None

        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        register_detrex_key_mapping(self)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    def preprocess(self, images: Sequence[Tensor]) -> ImageList:
        """uint8 ``3×H×W`` RGB frames -> normalised, padded :class:`ImageList` on the model's device."""
        normed = []
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"expected a 3×H×W RGB frame, got shape {tuple(img.shape)}")
            normed.append((img.to(self.device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(normed, self.size_divisibility)

    def encode(self, images: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Backbone + pixel encoder on a batch of frames.

        Args:
            images: ``(F, 3, H, W)`` normalised, padded frames (F = B·T in training, 1 in streaming).

        Returns:
            ``mask_features (F, D, H/4, W/4)`` and the multi-scale features (encoder order).
        """
        features = self.backbone(images)
        mask_features, multi_scale = self.pixel_decoder.forward_features(features)
        return mask_features, multi_scale

    def _static_anchors(self, batch: int) -> Tensor:
        return self.anchor_boxes.weight.sigmoid().unsqueeze(0).expand(batch, -1, -1)

    # ------------------------------------------------------------------ the online step
    def step(self, state: Optional[TrackState], multi_scale: List[Tensor], mask_features: Tensor,
             need_interm: bool = False, dn_targets: Optional[List[Dict[str, Tensor]]] = None
             ) -> Tuple[TrackState, Dict]:
        """Process one frame of B videos.

        Args:
            state: the :class:`TrackState` of frame t-1, or ``None`` at t = 0.
            multi_scale: encoder features of this frame, each ``(B, D, h_l, w_l)``.
            mask_features: ``(B, D, H/4, W/4)``.
            need_interm: also return the encoder-stage ("interm") predictions of the top-K tokens (training).
            dn_targets: per video ``{"labels": (n,), "boxes": (n, 4) normalised cxcywh}`` of this frame's valid
                instances; in training at t = 0 with a denoising decoder they become MaskDINO's DN queries
                (ignored otherwise).

        Returns:
            The new state and MaskDINO-style outputs ``{pred_logits (B,N,C), pred_masks (B,N,h,w), pred_boxes
            (B,N,4), aux_outputs, [interm_outputs], [dn]}``; ``dn`` is the denoising bookkeeping (``mask_dict``
            with the DN queries' predictions in ``output_known_lbs_bboxes``) when DN queries were used.
        """
        dec = self.decoder
        bundle = dec.prepare_memory(multi_scale)
        first = state is None
        need_tokens = first or self.aligner is not None or need_interm
        outputs: Dict = {}
        selected = interm_masks = None
        if need_tokens:
            output_memory, enc_logits, enc_coords_unsig = dec.encode_tokens(bundle)
            selected = self.query_selector(output_memory, enc_logits, enc_coords_unsig)
            if first or need_interm:
                # Interm heads see the *undetached* tokens so the encoder loss trains the encoder (MaskDINO).
                idx = selected.indices.unsqueeze(-1).expand(-1, -1, output_memory.shape[-1])
                tokens = torch.gather(output_memory, 1, idx)
                interm_logits, interm_masks = dec.predict(tokens, mask_features)
                outputs["interm_outputs"] = {"pred_logits": interm_logits, "pred_masks": interm_masks,
                                             "pred_boxes": selected.coords_unsig.sigmoid()}
        batch = mask_features.shape[0]

        if first:
            local_boxes = mask2box(interm_masks.detach())  # mask-enhanced boxes of the top-K tokens
            if self.first_frame == "image":
                tgt, ref_boxes = selected.queries, local_boxes
            else:
                if selected.queries.shape[1] != self.num_queries:
                    raise ValueError("first_frame='learned' takes g_pos from the top-K local queries' boxes: "
                                     f"needs K == N, got K={selected.queries.shape[1]}, N={self.num_queries}")
                ref_boxes = self._static_anchors(batch) if self.global_pos == "static" else local_boxes
                q_global = self.global_query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
                tgt = self._align(q_global, ref_boxes, selected)
        else:
            ref_boxes = self._static_anchors(batch) if self.global_pos == "static" else state.boxes
            tgt = state.queries if self.aligner is None else self._align(state.queries, ref_boxes, selected)

        refpoints_unsig = inverse_sigmoid(ref_boxes)
        mask_dict = attn_mask = None
        if first and dn_targets is not None and self.training and getattr(dec, "dn", "no") != "no":
            tgt, refpoints_unsig, attn_mask, mask_dict = dec.add_dn_queries(tgt, refpoints_unsig, dn_targets)
        out = dec.decode(tgt, refpoints_unsig, bundle, mask_features, self_attn_mask=attn_mask)
        if mask_dict is not None:
            out = dec.split_dn_queries(out, mask_dict)
            outputs["dn"] = mask_dict
        outputs.update(out.as_criterion_outputs())
        # detrex's mask2box gives a degenerate box for an empty interm mask at t = 0; clamping to [0, 1] (what
        # the decoder sees after inverse_sigmoid) keeps the propagated boxes and g_pos well defined.
        new_boxes = mask2box(outputs["pred_masks"].detach(), fallback_boxes=ref_boxes.detach().clamp(0.0, 1.0))
        return TrackState(out.hs_prenorm_last, new_boxes), outputs

    def _align(self, q_global: Tensor, ref_boxes: Tensor, selected) -> Tensor:
        g_pos = self.decoder.query_pos(ref_boxes.detach().clamp(0.0, 1.0))
        l_pos = None
        if self.aligner.needs_dynamic_local_pos:
            # Dynamic l_pos: the decoder's ref_point_head on the tokens' encoder-stage boxes (detached).
            l_pos = self.decoder.query_pos(selected.coords_unsig.detach().sigmoid())
        return self.aligner(q_global, selected.queries.detach(), g_pos, l_pos)

    # ------------------------------------------------------------------ training
    def forward(self, batched_inputs: List[Dict]):
        """Training: a list of clips (SPEC §5) -> weighted loss dict. Eval: a list of videos -> results."""
        if self.training:
            return self.forward_train(batched_inputs)
        return [self.inference_video(video) for video in batched_inputs]

    def forward_train(self, clips: List[Dict]) -> Dict[str, Tensor]:
        if self.criterion is None:
            raise RuntimeError("Local2Global was built without a criterion: it cannot be trained")
        num_frames = {len(c["images"]) for c in clips}
        if len(num_frames) != 1:
            raise ValueError(f"all clips of a batch must have the same number of frames, got {sorted(num_frames)}")
        T, B = num_frames.pop(), len(clips)
        # Frame-major within a clip: index b*T + t.
        images = self.preprocess([img for c in clips for img in c["images"]])
        mask_features, multi_scale = self.encode(images.tensor)
        # Per-frame views by ``unbind`` rather than ``x[:, t]`` in the loop: each indexing op's backward would
        # zero-fill a gradient of the whole clip's features (T full-size buffers per tensor).
        mask_features_per_frame = mask_features.unflatten(0, (B, T)).unbind(1)
        multi_scale_per_frame = [list(levels) for levels in zip(*(f.unflatten(0, (B, T)).unbind(1)
                                                                 for f in multi_scale))]
        targets = self.prepare_targets(clips, images)
        state, outputs_per_frame = None, []
        for t in range(T):
            dn_targets = None
            if t == 0:
                dn_targets = [{k: clip[0][k][clip[0]["valid"]] for k in ("labels", "boxes")} for clip in targets]
            state, out = self.step(state, multi_scale_per_frame[t], mask_features_per_frame[t],
                                   need_interm=(t == 0) or self.interm_loss_every_frame, dn_targets=dn_targets)
            outputs_per_frame.append(out)
        return self.criterion(outputs_per_frame, targets)

    def prepare_targets(self, clips: List[Dict], images: ImageList) -> List[List[Dict[str, Tensor]]]:
        """Per clip, per frame target dicts for the criterion (masks padded, boxes normalised cxcywh)."""
        pad_h, pad_w = images.tensor.shape[-2:]
        all_targets = []
        for clip in clips:
            frames = []
            for inst in clip["instances"]:
                h, w = inst.image_size
                masks = inst.gt_masks
                masks = masks.tensor if hasattr(masks, "tensor") else masks
                padded = torch.zeros((masks.shape[0], pad_h, pad_w), dtype=torch.bool, device=self.device)
                padded[:, : masks.shape[1], : masks.shape[2]] = masks.to(self.device, dtype=torch.bool)
                scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
                boxes = box_xyxy_to_cxcywh(inst.gt_boxes.tensor.to(self.device).float()) / scale
                frames.append({
                    "labels": inst.gt_classes.to(self.device),
                    "masks": padded,
                    "boxes": boxes,
                    "valid": inst.gt_valid.to(self.device, dtype=torch.bool),
                    "ids": inst.gt_ids.to(self.device),
                })
            all_targets.append(frames)
        return all_targets

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def inference_video(self, video: Dict) -> Dict:
        """Online inference on one video (SPEC §5 test sample -> model output)."""
        output_size = (int(video["height"]), int(video["width"]))
        self.postprocessor.reset()
        state = None
        for frame in video["frames"]:
            state, _ = self.process_frame(state, frame, output_size)
        return self.postprocessor.finalize(video["video_id"], output_size)

    @torch.no_grad()
    def process_frame(self, state: Optional[TrackState], frame: Tensor, output_size: Tuple[int, int],
                      return_instances: bool = False, frame_index: int = 0, store: bool = True
                      ) -> Tuple[TrackState, Optional[FrameInstances]]:
        """One streaming step: encode one frame, run :meth:`step`, feed the post-processor.

        Args:
            state: previous :class:`TrackState` or ``None`` for the first frame.
            frame: ``3×H×W`` uint8 RGB frame (already resized by the test transform).
            output_size: ``(H0, W0)`` original video resolution for the masks.
            return_instances: also build this frame's :class:`FrameInstances` (streaming API).
            frame_index: index reported in :class:`FrameInstances`.
            store: keep this frame's RLEs for the video-level result (see :meth:`VideoPostprocessor.update`).
        """
        images = self.preprocess([frame])
        mask_features, multi_scale = self.encode(images.tensor)
        state, out = self.step(state, multi_scale, mask_features)
        padded = tuple(images.tensor.shape[-2:])
        kept = self.postprocessor.update(out["pred_logits"][0], out["pred_masks"][0], padded,
                                         images.image_sizes[0], output_size, keep_frame_masks=return_instances,
                                         store=store)
        instances = None
        if return_instances:
            probs, masks = kept
            instances = self.postprocessor.frame_instances(frame_index, probs, masks, state.boxes[0])
        return state, instances

    def iter_video(self, frames: Iterable[Tensor], output_size: Tuple[int, int]):
        """Yield :class:`FrameInstances` frame by frame (the streaming API used by ``VideoPredictor``)."""
        state = None
        for i, frame in enumerate(frames):
            with torch.no_grad():
                state, inst = self.process_frame(state, frame, output_size, return_instances=True, frame_index=i)
            yield inst

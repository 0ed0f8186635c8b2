"""Local2Global: the online video segmentation meta-architecture with a pluggable tracker.

The meta-architecture receives built modules (constructor injection) and only wires the data flow of SPEC §2;
how the queries and identities of frame t-1 become those of frame t is the injected
:class:`~local2global.modeling.trackers.base.Tracker`:

```
frames (B×T×3×H×W) -> backbone -> pixel encoder           all B·T frames in one batch
for t in 0..T-1:                                             sequential, online
    query selector: top-K tokens -> q_local (detached), [Mask2Box of their encoder-stage masks]
    tracker.decoder_input(state, frame)   -> queries and reference boxes of the decoder
    decoder(queries, reference boxes, memory) -> decoder output
    tracker.update(state, frame, decoder output) -> outputs_t in slot order, state_t
criterion(outputs_0..T-1, targets)
```

The default tracker (:class:`~local2global.modeling.trackers.local2global.Local2GlobalTracker`) is the paper's
method: the L2G-aligner between the pixel encoder and the decoder and the Mask2Box trajectory; association
trackers (MinVIS, DVIS) run MaskDINO's image mode on every frame and link or refine its outputs afterwards. With
a tracker whose ``trains_segmenter`` is False the segmenter stays in eval mode without gradients in training.
When the decoder is built with denoising (``decoder.dn != "no"``) and the segmenter trains, training adds
MaskDINO's denoising queries to the first frame when it is an image-mode frame; they never enter the tracker state.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from detectron2.structures import ImageList
import torch
from torch import Tensor, nn

from local2global.layers.box_ops import box_xyxy_to_cxcywh, inverse_sigmoid, mask2box
from local2global.modeling.checkpoint import register_detrex_key_mapping
from local2global.modeling.postprocessing.video_instances import FrameInstances, VideoPostprocessor
from local2global.modeling.trackers.base import FrameContext, Tracker
from local2global.modeling.trackers.local2global import (
    FIRST_FRAME_MODES,
    GLOBAL_POS_MODES,
    Local2GlobalTracker,
    TrackState,
)

__all__ = ["Local2Global", "TrackState", "FIRST_FRAME_MODES", "GLOBAL_POS_MODES"]

logger = logging.getLogger(__name__)

# Parameter prefixes of checkpoints written before the tracker sub-package existed (the Local2Global step was part
# of the meta-architecture): mapped on load so those checkpoints keep loading.
LEGACY_TRACKER_PREFIXES = ("aligner.", "global_query_embed.", "anchor_boxes.")


def _legacy_tracker_keys_hook(module: nn.Module, state_dict, prefix: str, *args, **kwargs) -> None:
    if not isinstance(getattr(module, "tracker", None), Local2GlobalTracker):
        return
    moved = 0
    for key in list(state_dict):
        rel = key[len(prefix):] if key.startswith(prefix) else None
        if rel is not None and rel.startswith(LEGACY_TRACKER_PREFIXES):
            state_dict[prefix + "tracker." + rel] = state_dict.pop(key)
            moved += 1
    if moved:
        logger.info("Mapped %d pre-tracker checkpoint keys (aligner.*, global_query_embed.*, anchor_boxes.*) to "
                    "tracker.*", moved)


class Local2Global(nn.Module):
    """Online video segmentation: a shared MaskDINO segmenter and a pluggable tracker.

    Args:
        backbone: detectron2 ``Backbone`` returning ``res2..res5``.
        pixel_decoder: :class:`~local2global.modeling.segmenter.pixel_decoder.MaskDINOEncoder` (or compatible).
        decoder: :class:`~local2global.modeling.segmenter.decoder.MaskDINODecoder` (or compatible step API).
        tracker: a :class:`~local2global.modeling.trackers.base.Tracker`; ``None`` builds the plain-propagation
            :class:`~local2global.modeling.trackers.local2global.Local2GlobalTracker` (no aligner).
        criterion: :class:`~local2global.modeling.criteria.video_criterion.VideoSetCriterion`; returns weighted losses.
        query_selector: picks the top-K local queries; ``None`` uses the decoder's own selector.
        postprocessor: :class:`~local2global.modeling.postprocessing.video_instances.VideoPostprocessor` (test top-k etc.).
        num_queries: ``N`` global slots (must equal the decoder's number of queries).
        num_classes / hidden_dim: optional; checked against the decoder (configs interpolate the decoder's
            values from these, so one override changes every module).
        pixel_mean / pixel_std: input normalisation, RGB (MaskDINO's: torchvision-style weights).
        size_divisibility: padding multiple of the network input.
        interm_loss_every_frame: compute the encoder ("interm") predictions at t > 0 in training too, so the
            criterion's image-level encoder loss sees every frame.
    """

    def __init__(self, *, backbone: nn.Module, pixel_decoder: nn.Module, decoder: nn.Module,
                 tracker: Optional[Tracker] = None, criterion: Optional[nn.Module] = None,
                 query_selector: Optional[nn.Module] = None, postprocessor: Optional[VideoPostprocessor] = None,
                 num_queries: int = 300, num_classes: Optional[int] = None, hidden_dim: Optional[int] = None,
                 pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375), size_divisibility: int = 32,
                 interm_loss_every_frame: bool = True):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self.query_selector = query_selector if query_selector is not None else decoder.query_selector
        self.criterion = criterion
        self.postprocessor = postprocessor if postprocessor is not None else VideoPostprocessor()
        self.num_queries = num_queries
        self.size_divisibility = size_divisibility
        self.interm_loss_every_frame = interm_loss_every_frame
        dec_queries = getattr(decoder, "num_queries", num_queries)
        if dec_queries != num_queries:
            raise ValueError(f"model.num_queries={num_queries} but the decoder selects {dec_queries} queries; "
                             "set both (configs interpolate one from the other)")
        if num_classes is not None and num_classes != decoder.num_classes:
            raise ValueError(f"model.num_classes={num_classes} but the decoder has {decoder.num_classes} classes")
        if hidden_dim is not None and hidden_dim != decoder.hidden_dim:
            raise ValueError(f"model.hidden_dim={hidden_dim} but the decoder is {decoder.hidden_dim} wide")
        if tracker is None:
            tracker = Local2GlobalTracker(None, num_queries=num_queries, hidden_dim=decoder.hidden_dim)
        if not isinstance(tracker, Tracker):
            raise TypeError(f"model.tracker must be a local2global.modeling.trackers.Tracker, got {type(tracker)}")
        for attr in ("num_queries", "hidden_dim"):
            value = getattr(tracker, attr, None)
            expected = num_queries if attr == "num_queries" else decoder.hidden_dim
            if value is not None and value != expected:
                raise ValueError(f"tracker.{attr}={value} but the model has {attr}={expected}")
        self.tracker = tracker
        if not tracker.trains_segmenter:
            # Association on a frozen segmenter: only the tracker's own parameters train.
            for module in self.segmenter_modules():
                module.requires_grad_(False)

        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        register_detrex_key_mapping(self)
        self.register_load_state_dict_pre_hook(_legacy_tracker_keys_hook)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    @property
    def aligner(self) -> Optional[nn.Module]:
        """The Local2Global tracker's aligner (``None`` for other trackers and the propagation baseline)."""
        return getattr(self.tracker, "aligner", None)

    @property
    def segmenter_frozen(self) -> bool:
        return not self.tracker.trains_segmenter

    def segmenter_modules(self) -> List[nn.Module]:
        """The shared segmenter: backbone, pixel encoder, decoder (with its query selector)."""
        mods = [self.backbone, self.pixel_decoder, self.decoder]
        if self.query_selector is not getattr(self.decoder, "query_selector", None):
            mods.append(self.query_selector)
        return mods

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.segmenter_frozen:
            for module in self.segmenter_modules():
                module.eval()
        return self

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
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.segmenter_frozen):
            features = self.backbone(images)
            mask_features, multi_scale = self.pixel_decoder.forward_features(features)
        return mask_features, multi_scale

    # ------------------------------------------------------------------ the online step
    def step(self, state: Any, multi_scale: List[Tensor], mask_features: Tensor,
             need_interm: bool = False, dn_targets: Optional[List[Dict[str, Tensor]]] = None,
             frame_index: Optional[int] = None) -> Tuple[Any, Dict]:
        """Process one frame of B videos.

        Args:
            state: the tracker state of frame t-1, or ``None`` at t = 0.
            multi_scale: encoder features of this frame, each ``(B, D, h_l, w_l)``.
            mask_features: ``(B, D, H/4, W/4)``.
            need_interm: also return the encoder-stage ("interm") predictions of the top-K tokens (training).
            dn_targets: per video ``{"labels": (n,), "boxes": (n, 4) normalised cxcywh}`` of this frame's valid
                instances; in training, on an image-mode frame of a denoising decoder whose segmenter trains,
                they become MaskDINO's DN queries (ignored otherwise).
            frame_index: the frame's index (reported to the tracker; default 0 when ``state`` is None, else 1).

        Returns:
            The new state and MaskDINO-style outputs in slot order ``{pred_logits (B,N,C), pred_masks (B,N,h,w),
            pred_boxes (B,N,4), aux_outputs, [interm_outputs], [dn]}``; ``dn`` is the denoising bookkeeping
            (``mask_dict`` with the DN queries' predictions in ``output_known_lbs_bboxes``) when DN queries were used.
        """
        dec, tracker = self.decoder, self.tracker
        if frame_index is None:
            frame_index = 0 if state is None else 1
        outputs: Dict = {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.segmenter_frozen):
            bundle = dec.prepare_memory(multi_scale)
            need_boxes = tracker.needs_local_boxes(state)
            need_tokens = need_boxes or tracker.needs_local_queries(state) or need_interm
            selected = local_boxes = None
            if need_tokens:
                output_memory, enc_logits, enc_coords_unsig = dec.encode_tokens(bundle)
                selected = self.query_selector(output_memory, enc_logits, enc_coords_unsig)
                if need_boxes or need_interm:
                    # Interm heads see the *undetached* tokens so the encoder loss trains the encoder (MaskDINO).
                    idx = selected.indices.unsqueeze(-1).expand(-1, -1, output_memory.shape[-1])
                    tokens = torch.gather(output_memory, 1, idx)
                    interm_logits, interm_masks = dec.predict(tokens, mask_features)
                    if need_interm:
                        outputs["interm_outputs"] = {"pred_logits": interm_logits, "pred_masks": interm_masks,
                                                     "pred_boxes": selected.coords_unsig.sigmoid()}
                    if need_boxes:
                        local_boxes = mask2box(interm_masks.detach())  # mask-enhanced boxes of the top-K tokens
            want_embeds = self.training and bool(getattr(self.criterion, "needs_mask_embeds", False))
            ctx = FrameContext(decoder=dec, bundle=bundle, mask_features=mask_features, selected=selected,
                               local_boxes=local_boxes, frame_index=frame_index, want_mask_embeds=want_embeds)
            # Association trackers on a frozen segmenter take MaskDINO's image-mode input: no gradient needed.
            queries = tracker.decoder_input(state, ctx)
            refpoints_unsig = inverse_sigmoid(queries.ref_boxes)
            tgt, mask_dict, attn_mask = queries.tgt, None, None
            if (queries.image_mode and dn_targets is not None and self.training and not self.segmenter_frozen
                    and getattr(dec, "dn", "no") != "no"):
                tgt, refpoints_unsig, attn_mask, mask_dict = dec.add_dn_queries(tgt, refpoints_unsig, dn_targets)
            decoded = dec.decode(tgt, refpoints_unsig, bundle, mask_features, self_attn_mask=attn_mask)
            if mask_dict is not None:
                decoded = dec.split_dn_queries(decoded, mask_dict)
                outputs["dn"] = mask_dict
        state, tracked = tracker.update(state, ctx, queries, decoded)
        outputs.update(tracked)
        if want_embeds:
            outputs["mask_features"] = mask_features
        return state, outputs

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
            # The encoder loss trains the segmenter: skipped when the tracker keeps it frozen.
            need_interm = not self.segmenter_frozen and ((t == 0) or self.interm_loss_every_frame)
            state, out = self.step(state, multi_scale_per_frame[t], mask_features_per_frame[t],
                                   need_interm=need_interm, dn_targets=dn_targets, frame_index=t)
            outputs_per_frame.append(out)
        return self.criterion(outputs_per_frame, targets)

    def prepare_targets(self, clips: List[Dict], images: ImageList) -> List[List[Dict[str, Tensor]]]:
        """Per clip, per frame target dicts for the criterion (masks padded, boxes normalised cxcywh; ``is_thing``
        (n,) bool when the clip's ``Instances`` carry ``gt_is_thing``, i.e. panoptic training)."""
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
                target = {
                    "labels": inst.gt_classes.to(self.device),
                    "masks": padded,
                    "boxes": boxes,
                    "valid": inst.gt_valid.to(self.device, dtype=torch.bool),
                    "ids": inst.gt_ids.to(self.device),
                }
                if inst.has("gt_is_thing"):
                    # Panoptic clips (VideoPanopticClipMapper): stuff targets get no box loss and no box cost.
                    target["is_thing"] = inst.gt_is_thing.to(self.device, dtype=torch.bool)
                frames.append(target)
            all_targets.append(frames)
        return all_targets

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def inference_video(self, video: Dict) -> Dict:
        """Online inference on one video (SPEC §5 test sample -> model output)."""
        output_size = (int(video["height"]), int(video["width"]))
        self.postprocessor.reset()
        state = None
        for i, frame in enumerate(video["frames"]):
            state, _ = self.process_frame(state, frame, output_size, frame_index=i)
        return self.postprocessor.finalize(video["video_id"], output_size)

    @torch.no_grad()
    def process_frame(self, state: Any, frame: Tensor, output_size: Tuple[int, int],
                      return_instances: bool = False, frame_index: int = 0, store: bool = True
                      ) -> Tuple[Any, Optional[FrameInstances]]:
        """One streaming step: encode one frame, run :meth:`step`, feed the post-processor.

        Args:
            state: the tracker's previous state, or ``None`` for the first frame.
            frame: ``3×H×W`` uint8 RGB frame (already resized by the test transform).
            output_size: ``(H0, W0)`` original video resolution for the masks.
            return_instances: also build this frame's :class:`FrameInstances` (streaming API).
            frame_index: index reported in :class:`FrameInstances`.
            store: keep this frame's RLEs for the video-level result (see :meth:`VideoPostprocessor.update`).
        """
        images = self.preprocess([frame])
        mask_features, multi_scale = self.encode(images.tensor)
        state, out = self.step(state, multi_scale, mask_features, frame_index=frame_index)
        padded = tuple(images.tensor.shape[-2:])
        kept = self.postprocessor.update(out["pred_logits"][0], out["pred_masks"][0], padded,
                                         images.image_sizes[0], output_size, keep_frame_masks=return_instances,
                                         store=store)
        instances = None
        if return_instances:
            probs, masks = kept
            boxes = mask2box(out["pred_masks"][:1], fallback_boxes=out["pred_boxes"][:1].clamp(0.0, 1.0))[0]
            instances = self.postprocessor.frame_instances(frame_index, probs, masks, boxes)
        return state, instances

    def iter_video(self, frames: Iterable[Tensor], output_size: Tuple[int, int]):
        """Yield :class:`FrameInstances` frame by frame (the streaming API used by ``VideoPredictor``)."""
        state = None
        for i, frame in enumerate(frames):
            with torch.no_grad():
                state, inst = self.process_frame(state, frame, output_size, return_instances=True, frame_index=i)
            yield inst

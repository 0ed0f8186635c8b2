"""MaskDINO's pixel decoder ("MaskDINOEncoder"): multi-scale deformable encoder + FPN mask features.

Constructor arguments and parameter names equal detrex's ``MaskDINOEncoder``
(``projects/maskdino/modeling/pixel_decoder/maskdino_encoder.py``), so the ``sem_seg_head.pixel_decoder.*``
entries of a detrex MaskDINO checkpoint load with ``strict=True``:

* ``input_proj.{i}.{0,1}``: 1x1 conv + GroupNorm(32) per transformer level (highest resolution first for
  ``feature_order="low2high"``), then ``total - num_transformer_levels`` extra levels (3x3 stride-2 conv + GN;
  the first on the widest backbone map, res5);
* ``transformer.level_embed``, ``transformer.encoder.layers.{i}.*``: the deformable encoder
  (:mod:`local2global.modeling.segmenter.deformable_encoder`);
* ``mask_features``: 1x1 conv on the stride-``common_stride`` FPN map;
* ``adapter_{k}`` / ``layer_{k}``: FPN lateral (1x1) and output (3x3 + ReLU) convs with norm (detectron2 ``Conv2d``)
  for the backbone levels finer than the transformer's (res2 for stride 8 -> 4).

For the default ``feature_order="low2high"`` and ``transformer_in_features=[res3, res4, res5]`` the encoder
level order is ``[res3, res4, res5, extra]`` (high to low resolution).
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from detectron2.layers import Conv2d, ShapeSpec, get_norm
import fvcore.nn.weight_init as weight_init
import torch
from torch import Tensor, nn
import torch.nn.functional as F

from local2global.layers.ms_deform_attn import host_spatial_shapes
from local2global.layers.position_encoding import PositionEmbeddingSine

from .deformable_encoder import DeformableTransformerEncoderOnly

__all__ = ["MaskDINOEncoder"]

logger = logging.getLogger(__name__)


def _as_shape_spec(name: str, spec) -> ShapeSpec:
    if isinstance(spec, ShapeSpec):
        return spec
    if isinstance(spec, Mapping):
        return ShapeSpec(channels=spec.get("channels"), stride=spec.get("stride"))
    raise TypeError(f"input_shape[{name!r}] must be a ShapeSpec or a mapping with channels/stride, got {spec!r}")


class MaskDINOEncoder(nn.Module):
    """Multi-scale deformable pixel encoder of MaskDINO.

    Args:
        input_shape: backbone feature name -> ``ShapeSpec(channels, stride)`` (e.g. ``res2..res5``).
        transformer_dropout: dropout inside the encoder.
        transformer_nheads: attention heads.
        transformer_dim_feedforward: encoder FFN width.
        transformer_enc_layers: encoder depth.
        conv_dim: hidden width ``D``.
        mask_dim: channels of ``mask_features``.
        norm: norm of the FPN convs (``"GN"``; ``""`` = none, then the convs have a bias).
        transformer_in_features: backbone maps fed to the encoder (e.g. ``["res3", "res4", "res5"]``).
        common_stride: stride of ``mask_features`` (4).
        num_feature_levels: MaskDINO's number of backbone scales (kept for compatibility; 3).
        total_num_feature_levels: encoder levels including the extra downsampled ones (4).
        feature_order: ``"low2high"`` (detrex default; encoder levels high resolution first) or ``"high2low"``.
        transformer_activation: encoder FFN activation.
        enc_n_points: sampling points per head and level.
    """

    def __init__(self, input_shape: Dict[str, ShapeSpec], *, transformer_dropout: float, transformer_nheads: int,
                 transformer_dim_feedforward: int, transformer_enc_layers: int, conv_dim: int, mask_dim: int,
                 norm: Optional[Union[str, Callable]] = None, transformer_in_features: Sequence[str],
                 common_stride: int, num_feature_levels: int, total_num_feature_levels: int,
                 feature_order: str, transformer_activation: str = "relu", enc_n_points: int = 4):
        super().__init__()
        if feature_order not in ("low2high", "high2low"):
            raise ValueError(f"feature_order must be 'low2high' or 'high2low', got {feature_order!r}")
        shapes = {k: _as_shape_spec(k, v) for k, v in input_shape.items()}
        missing = [f for f in transformer_in_features if f not in shapes]
        if missing:
            raise ValueError(f"transformer_in_features {missing} not in input_shape {sorted(shapes)}")
        ordered = sorted(shapes.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in ordered]
        self.feature_strides = [v.stride for _, v in ordered]
        self.feature_channels = [v.channels for _, v in ordered]
        self.feature_order = feature_order

        sign = -1 if feature_order == "low2high" else 1
        trans = sorted(((k, shapes[k]) for k in transformer_in_features), key=lambda kv: sign * kv[1].stride)
        self.transformer_in_features = [k for k, _ in trans]
        trans_channels = [v.channels for _, v in trans]
        self.transformer_feature_strides = [v.stride for _, v in trans]
        self.maskdino_num_feature_levels = num_feature_levels
        self.total_num_feature_levels = total_num_feature_levels
        self.common_stride = common_stride
        self.transformer_num_feature_levels = len(self.transformer_in_features)
        self.low_resolution_index = trans_channels.index(max(trans_channels))
        self.high_resolution_index = 0 if feature_order == "low2high" else -1
        if total_num_feature_levels < self.transformer_num_feature_levels:
            raise ValueError(f"total_num_feature_levels ({total_num_feature_levels}) < number of "
                             f"transformer_in_features ({self.transformer_num_feature_levels})")

        if self.transformer_num_feature_levels > 1:
            projs = [nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
                     for c in trans_channels[::-1]]
            in_channels = max(trans_channels)
            for _ in range(total_num_feature_levels - self.transformer_num_feature_levels):
                projs.append(nn.Sequential(nn.Conv2d(in_channels, conv_dim, kernel_size=3, stride=2, padding=1),
                                           nn.GroupNorm(32, conv_dim)))
                in_channels = conv_dim
        else:
            projs = [nn.Sequential(nn.Conv2d(trans_channels[-1], conv_dim, kernel_size=1),
                                   nn.GroupNorm(32, conv_dim))]
        self.input_proj = nn.ModuleList(projs)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

        self.transformer = DeformableTransformerEncoderOnly(
            d_model=conv_dim, nhead=transformer_nheads, num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward, dropout=transformer_dropout,
            activation=transformer_activation, num_feature_levels=total_num_feature_levels,
            enc_n_points=enc_n_points)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = int(round(math.log2(stride) - math.log2(common_stride)))
        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(self.feature_channels[:self.num_fpn_levels]):
            lateral = Conv2d(in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
            output = Conv2d(conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias,
                            norm=get_norm(norm, conv_dim), activation=F.relu)
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # Plain lists (not registered twice), coarse -> fine.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    def _check_features(self, features: Dict[str, Tensor]) -> None:
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise KeyError(f"MaskDINOEncoder.forward_features: missing feature maps {missing} "
                           f"(got {sorted(features)})")

    def forward_features(self, features: Dict[str, Tensor], masks: Optional[List[Tensor]] = None
                         ) -> Tuple[Tensor, List[Tensor]]:
        """Encode the backbone maps.

        Runs in float32 with autocast disabled (as detrex: deformable attention is not half-precision safe).

        Args:
            features: backbone maps ``{"res2": (B, C2, H/4, W/4), ..., "res5": (B, C5, H/32, W/32)}``.
            masks: optional per-encoder-level ``(B, h_l, w_l)`` bool padding masks (True = padding). detrex's
                MaskDINO always passes none, i.e. all-False masks and valid ratios 1, also for padded batches;
                ``None`` reproduces that.

        Returns:
            ``mask_features (B, mask_dim, H/4, W/4)`` and ``multi_scale_features``: ``total_num_feature_levels``
            maps ``(B, D, h_l, w_l)`` in encoder level order (``[res3, res4, res5, extra]`` by default).
        """
        self._check_features(features)
        device_type = features[self.in_features[0]].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_features(features, masks)

    def forward(self, features: Dict[str, Tensor], masks: Optional[List[Tensor]] = None
                ) -> Tuple[Tensor, List[Tensor]]:
        """Alias of :meth:`forward_features`."""
        return self.forward_features(features, masks)

    def _forward_features(self, features: Dict[str, Tensor], masks: Optional[List[Tensor]]
                          ) -> Tuple[Tensor, List[Tensor]]:
        extra_srcs: List[Tensor] = []
        extra_pos: List[Tensor] = []
        n_trans = self.transformer_num_feature_levels
        if self.total_num_feature_levels > n_trans:
            smallest = features[self.transformer_in_features[self.low_resolution_index]].float()
            for lvl in range(n_trans, self.total_num_feature_levels):
                src = self.input_proj[lvl](smallest if lvl == n_trans else extra_srcs[-1])
                extra_srcs.append(src)
                extra_pos.append(self.pe_layer(src))
        # detrex reverses the list of extra sources but not that of their encodings (no effect with one extra
        # level, the default); kept as is for checkpoint/output compatibility.
        extra_srcs = extra_srcs[::-1]
        srcs: List[Tensor] = []
        pos: List[Tensor] = []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        if self.feature_order == "low2high":
            srcs = srcs + extra_srcs
            pos = pos + extra_pos
        else:
            srcs = extra_srcs + srcs
            pos = extra_pos + pos
        if masks is not None and len(masks) != len(srcs):
            raise ValueError(f"got {len(masks)} padding masks for {len(srcs)} encoder levels")

        memory, spatial_shapes, level_start_index = self.transformer(srcs, masks, pos)
        batch = memory.shape[0]
        shapes = host_spatial_shapes(spatial_shapes)  # the host copy the encoder attached: no device read-back
        sizes = [h * w for h, w in shapes]
        out = [z.transpose(1, 2).reshape(batch, -1, h, w) for z, (h, w) in zip(memory.split(sizes, dim=1), shapes)]

        for idx, name in enumerate(self.in_features[:self.num_fpn_levels][::-1]):
            lateral = self.lateral_convs[idx](features[name].float())
            # As detrex: always upsample out[high_resolution_index] (the res3-level encoder output for low2high).
            up = F.interpolate(out[self.high_resolution_index], size=lateral.shape[-2:], mode="bilinear",
                               align_corners=False)
            y = lateral + up
            out.append(self.output_convs[idx](y))
        multi_scale_features = out[:self.total_num_feature_levels]
        return self.mask_features(out[-1]), multi_scale_features

"""Stage factory for narrow R-50-style (bottleneck) ResNets, e.g. the MaskDINO parity fixture's backbone.

The default model uses detectron2's own ``ResNet.make_default_stages(depth=50, ...)``; this factory only
exists for small variants with arbitrary stage widths and depths::

    ResNet(stem=BasicStem(3, 8, norm="FrozenBN"), stages=make_resnet_stages(...),
           out_features=["res2", "res3", "res4", "res5"], freeze_at=1)

It is LazyCall-able (plain keyword arguments, returns ``List[List[CNNBlockBase]]``).
"""

from __future__ import annotations

from typing import List, Sequence

from detectron2.modeling.backbone import BottleneckBlock, ResNet
from torch import nn

__all__ = ["make_resnet_stages"]


def make_resnet_stages(stage_channels: Sequence[int] = (16, 32, 64, 128), num_blocks: Sequence[int] = (2, 2, 2, 2),
                       stem_channels: int = 8, norm: str = "FrozenBN", stride_in_1x1: bool = False,
                       bottleneck_ratio: int = 4) -> List[List[nn.Module]]:
    """Build the stages ``res2..res{1+len(stage_channels)}`` of a bottleneck ResNet.

    Every stage is ``ResNet.make_stage(BottleneckBlock, n, ...)`` with ``bottleneck_channels = out // ratio``;
    the first stage keeps the stem's resolution (stride 1), the others halve it in their first block (the
    3x3 conv carries the stride unless ``stride_in_1x1``). The first block of a stage has a projection
    shortcut whenever its in/out widths differ (detectron2's rule).

    Args:
        stage_channels: output channels per stage; each strided stage (all but the first) must be wider than
            its input (detectron2's blocks project the shortcut only when the widths differ).
        num_blocks: blocks per stage.
        stem_channels: the stem's output channels (input of the first stage).
        norm: detectron2 norm name (``"FrozenBN"``, ``"BN"``, ``"GN"`` ...).
        stride_in_1x1: put the stride in the first 1x1 conv (MSRA style) instead of the 3x3.
        bottleneck_ratio: ``out_channels / bottleneck_channels`` (4 in R-50).

    Returns:
        list of stages, each a list of blocks (what ``ResNet(stages=...)`` expects).
    """
    if len(stage_channels) != len(num_blocks):
        raise ValueError(f"stage_channels {tuple(stage_channels)} and num_blocks {tuple(num_blocks)} differ in length")
    stages = []
    in_channels = stem_channels
    for idx, (out_channels, blocks) in enumerate(zip(stage_channels, num_blocks)):
        if out_channels % bottleneck_ratio:
            raise ValueError(f"stage {idx} width {out_channels} is not divisible by bottleneck_ratio {bottleneck_ratio}")
        first_stride = 1 if idx == 0 else 2
        if first_stride > 1 and out_channels == in_channels:
            # detectron2's BottleneckBlock only projects the shortcut when the widths differ, so a strided
            # block that keeps its width would add a full-resolution identity to a half-resolution output
            raise ValueError(f"stage {idx} (stride 2) keeps the width {out_channels} of its input: detectron2's "
                             f"BottleneckBlock has no strided identity shortcut; make it wider than its input")
        stages.append(ResNet.make_stage(
            BottleneckBlock, blocks, stride_per_block=[first_stride] + [1] * (blocks - 1),
            in_channels=in_channels, out_channels=out_channels,
            bottleneck_channels=out_channels // bottleneck_ratio, stride_in_1x1=stride_in_1x1, norm=norm))
        in_channels = out_channels
    return stages

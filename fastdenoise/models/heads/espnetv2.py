"""ESPNetv2 (Mehta et al., CVPR 2019), width s=2.0, semantic segmentation; state-dict keys of EdgeNets' model zoo.

Encoder: strided EESP units (reduce, split into 4 depthwise dilated branches, hierarchical fusion, group 1x1 merge)
with input reinforcement; decoder: efficient pyramid pooling at 1/16, 1/8, 1/4, 1/2 with gated encoder skips.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.models.heads.common import IMAGENET_MEAN, IMAGENET_STD, VOC_CLASSES, Normalize, load_strict

CHANNELS = (32, 128, 256, 512)  # level 1..4 outputs at s = 2.0
REPEATS = (3, 7)  # EESP units after the level-3 and level-4 down-samplers
RECEPTIVE_LIMIT = (13, 11, 9, 7)  # largest kernel (as a dilated 3x3) per level
BRANCHES = 4
DECODER_WIDTH = 16  # decoder planes 64, 48, 32 (4x, 3x, 2x)
# Pyramid scales 2, 1.5, 1, 0.5, 0.1 as (numerator, denominator): level sizes max(5, ceil(n * scale)) in integer
# arithmetic, equal to the float formula of the released code, and kept exact and symbolic by torch.export.
PYRAMID_SCALES = ((2, 1), (3, 2), (1, 1), (1, 2), (1, 10))
PYRAMID_MIN = 5

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
    "background",
)
CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
CAMVID_VOID = 11
# Mask colours (RGB) of each class, as the datasets draw them: CamVid's SegNet colours (void black), Cityscapes' own.
CAMVID_PALETTE = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
    (0, 0, 0),
)
CITYSCAPES_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
    (0, 0, 0),
)
# CamVid (SegNet 11-class) index of each Cityscapes class. CamVid's Car covers cars, trucks, buses and trains; its
# Bicyclist covers rider, bicycle and motorcycle; Tree is all vegetation (terrain included); Building takes walls.
# Cityscapes' "background" has no CamVid class: it maps to void and drops out of the merged prediction.
CITYSCAPES_TO_CAMVID = (3, 4, 1, 1, 7, 2, 6, 6, 5, 5, 0, 9, 10, 8, 8, 8, 8, 10, 10, CAMVID_VOID)
# EdgeNets model zoo
VOC_WEIGHTS, CITYSCAPES_WEIGHTS = "espnetv2_s_2.0_pascal_384x384.pth", "espnetv2_s_2.0_city_1024x512.pth"


class CBR(nn.Module):
    """conv -> BN -> PReLU (encoder naming: conv, bn, act)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class CB(nn.Module):
    """conv -> BN."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, 1, padding=k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class BR(nn.Module):
    """BN -> PReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(x))


class DilatedDepthwise(nn.Module):
    """3x3 depthwise conv with dilation d (receptive field 2d + 1)."""

    def __init__(self, channels: int, dilation: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, 3, stride, padding=dilation, dilation=dilation, groups=channels, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class EESP(nn.Module):
    """Extremely efficient spatial pyramid unit: group 1x1 reduce to cout/4, 4 dilated depthwise branches summed
    hierarchically (branch k adds branch k-1, against gridding), BN-PReLU, group 1x1 expand, residual, PReLU."""

    def __init__(self, cin: int, cout: int, stride: int, receptive_limit: int) -> None:
        super().__init__()
        width = cout // BRANCHES
        kernels = sorted(k if k <= receptive_limit else 3 for k in range(3, 3 + 2 * BRANCHES, 2))
        self.stride = stride
        self.proj_1x1 = CBR(cin, width, 1, groups=BRANCHES)
        self.spp_dw = nn.ModuleList(DilatedDepthwise(width, (k - 1) // 2, stride) for k in kernels)
        self.conv_1x1_exp = CB(cout, cout, 1, groups=BRANCHES)
        self.br_after_cat = BR(cout)
        self.module_act = nn.PReLU(cout)  # unused when the unit down-samples, but part of the released weights

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.proj_1x1(x)
        branches = [self.spp_dw[0](reduced)]
        for conv in self.spp_dw[1:]:
            branches.append(conv(reduced) + branches[-1])
        out = self.conv_1x1_exp(self.br_after_cat(torch.cat(branches, 1)))
        if self.stride == 2:
            return out  # the down-sampler adds the pooled input and applies its own activation
        return self.module_act(out + x if out.shape == x.shape else out)


class DownSampler(nn.Module):
    """Stride-2 level entry: [avg-pooled input, strided EESP] concatenated, plus the image pooled to this size."""

    def __init__(self, cin: int, cout: int, receptive_limit: int) -> None:
        super().__init__()
        self.eesp = EESP(cin, cout - cin, 2, receptive_limit)
        self.inp_reinf = nn.Sequential(CBR(3, 3, 3), CB(3, cout, 1))
        self.act = nn.PReLU(cout)

    def forward(self, x: Tensor, image: Tensor) -> Tensor:
        out = torch.cat([F.avg_pool2d(x, 3, 2, padding=1), self.eesp(x)], 1)
        return self.act(out + self.inp_reinf(image))


class Encoder(nn.Module):
    """ESPNetv2 image encoder (levels 1-4 of the ImageNet network; level 5 and the classifier are not used)."""

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3, c4 = CHANNELS
        self.level1 = CBR(3, c1, 3, stride=2)
        self.level2_0 = DownSampler(c1, c2, RECEPTIVE_LIMIT[0])
        self.level3_0 = DownSampler(c2, c3, RECEPTIVE_LIMIT[1])
        self.level3 = nn.ModuleList(EESP(c3, c3, 1, RECEPTIVE_LIMIT[2]) for _ in range(REPEATS[0]))
        self.level4_0 = DownSampler(c3, c4, RECEPTIVE_LIMIT[2])
        self.level4 = nn.ModuleList(EESP(c4, c4, 1, RECEPTIVE_LIMIT[3]) for _ in range(REPEATS[1]))


class DecoderCBR(nn.Module):
    """conv -> BN -> PReLU (decoder naming: cbr.0, cbr.1, cbr.2)."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(cin, cout, k, 1, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cbr(x)


class DecoderBR(nn.Module):
    """BN -> PReLU (decoder naming: br.0, br.1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.br = nn.Sequential(nn.BatchNorm2d(channels), nn.PReLU(channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.br(x)


class ChannelShuffle(nn.Module):
    """(N, g*c, H, W) -> (N, c*g, H, W): interleave the g groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)


def pyramid_size(n: int, scale: tuple[int, int]) -> int:
    """max(5, ceil(n * num / den)); torch.sym_max keeps the export symbolic where max() would fix it to the example."""
    num, den = scale
    return torch.sym_max(PYRAMID_MIN, (n * num + den - 1) // den)


def pooling_matrix(size_in: int, size_out: int, like: Tensor) -> Tensor:
    """(size_out, size_in) weights of adaptive average pooling: row i averages [floor(i n / m), ceil((i + 1) n / m))."""
    i = torch.arange(size_out, device=like.device)
    start = (i * size_in) // size_out
    end = ((i + 1) * size_in + size_out - 1) // size_out
    j = torch.arange(size_in, device=like.device)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def matrix_avg_pool(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Adaptive average pooling of (N, C, H, W) to `size` as A_h @ x @ A_w^T: no branch on the sizes, up or down."""
    rows = pooling_matrix(x.shape[-2], size[0], x)  # (h_out, H)
    cols = pooling_matrix(x.shape[-1], size[1], x)  # (w_out, W)
    return rows @ x @ cols.transpose(0, 1)


def adaptive_avg_pool(x: Tensor, size: tuple[int, int]) -> Tensor:
    """F.adaptive_avg_pool2d(x, size); in an ONNX export, matrix_avg_pool.

    torch.onnx decomposes adaptive_avg_pool2d for the example's sizes (divisible or not, the window count) and the
    graph fails on others (a Gather out of bounds); eagerly the native op takes 20-30% less of the head's time.
    """
    if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
        return matrix_avg_pool(x, size)
    return F.adaptive_avg_pool2d(x, size)


class PyramidPool(nn.Module):
    """Efficient pyramid pooling: 1x1 project, a depthwise 3x3 at each of 5 scales, shuffle, group 3x3, 1x1 out."""

    def __init__(self, cin: int, proj: int, cout: int, last: bool = False) -> None:
        super().__init__()
        s = len(PYRAMID_SCALES)
        self.projection_layer = DecoderCBR(cin, proj, 1)
        self.stages = nn.ModuleList(
            nn.Conv2d(proj, proj, 3, 1, padding=1, groups=proj, bias=False) for _ in PYRAMID_SCALES
        )
        self.merge_layer = nn.Sequential(
            DecoderBR(proj * s),
            ChannelShuffle(s),
            DecoderCBR(proj * s, proj, 3, groups=proj),
            nn.Conv2d(proj, cout, 1, bias=last),
        )
        self.br = None if last else DecoderBR(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.projection_layer(x)
        h, w = x.shape[-2:]
        levels = []
        for (num, den), conv in zip(PYRAMID_SCALES, self.stages):
            size = (pyramid_size(h, (num, den)), pyramid_size(w, (num, den)))
            if num > den:  # upsample, filter, pool back
                y = adaptive_avg_pool(conv(F.interpolate(x, size, mode="bilinear", align_corners=True)), (h, w))
            elif num < den:  # pool, filter, upsample back
                y = F.interpolate(conv(adaptive_avg_pool(x, size)), (h, w), mode="bilinear", align_corners=True)
            else:
                y = conv(x)
            levels.append(y)
        out = self.merge_layer(torch.cat(levels, 1))
        return out if self.br is None else self.br(out)


class GatedSkip(nn.Module):
    """Encoder skip for the decoder: group 3x3 conv to the decoder width, scaled by a global sigmoid gate."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.wt_layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.Sigmoid())
        self.expansion_layer = DecoderCBR(cin, cout, 3, groups=math.gcd(cin, cout))

    def forward(self, x: Tensor) -> Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


def upsample_to(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, like.shape[-2:], mode="bilinear", align_corners=True)


class ESPNetv2(nn.Module):
    """[0, 1] RGB (N, 3, H, W) -> logits (N, classes, H, W); normalises with ImageNet mean/std itself. Any H x W."""

    task = "segment"

    def __init__(
        self,
        num_classes: int = 21,
        class_names: tuple[str, ...] | None = None,
        palette: tuple[tuple[int, int, int], ...] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.class_names, self.palette = num_classes, class_names, palette
        d1, d2, d3 = 4 * DECODER_WIDTH, 3 * DECODER_WIDTH, 2 * DECODER_WIDTH
        proj = min(num_classes // 2, DECODER_WIDTH)
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.base_net = Encoder()
        self.bu_dec_l1 = PyramidPool(CHANNELS[3], proj, d1)
        self.bu_dec_l2 = PyramidPool(d1, proj, d2)
        self.bu_dec_l3 = PyramidPool(d2, proj, d3)
        self.bu_dec_l4 = PyramidPool(d3, proj, num_classes, last=True)
        self.merge_enc_dec_l2 = GatedSkip(CHANNELS[2], d1)
        self.merge_enc_dec_l3 = GatedSkip(CHANNELS[1], d2)
        self.merge_enc_dec_l4 = GatedSkip(CHANNELS[0], d3)
        self.bu_br_l2 = nn.Sequential(nn.BatchNorm2d(d1), nn.PReLU(d1))
        self.bu_br_l3 = nn.Sequential(nn.BatchNorm2d(d2), nn.PReLU(d2))
        self.bu_br_l4 = nn.Sequential(nn.BatchNorm2d(d3), nn.PReLU(d3))

    def forward(self, x: Tensor) -> Tensor:
        enc, size = self.base_net, x.shape[-2:]
        image = self.normalize(x)
        e1 = enc.level1(image)  # (N, 32, H/2, W/2)
        image = F.avg_pool2d(F.avg_pool2d(image, 3, 2, padding=1), 3, 2, padding=1)  # input reinforcement at 1/4
        e2 = enc.level2_0(e1, image)  # (N, 128, H/4, W/4)
        image = F.avg_pool2d(image, 3, 2, padding=1)
        e3 = enc.level3_0(e2, image)  # (N, 256, H/8, W/8)
        for unit in enc.level3:
            e3 = unit(e3)
        image = F.avg_pool2d(image, 3, 2, padding=1)
        e4 = enc.level4_0(e3, image)  # (N, 512, H/16, W/16)
        for unit in enc.level4:
            e4 = unit(e4)
        y = self.bu_dec_l1(e4)  # (N, 64, H/16, W/16)
        y = self.bu_dec_l2(self.bu_br_l2(upsample_to(y, e3) + self.merge_enc_dec_l2(e3)))  # (N, 48, H/8, W/8)
        y = self.bu_dec_l3(self.bu_br_l3(upsample_to(y, e2) + self.merge_enc_dec_l3(e2)))  # (N, 32, H/4, W/4)
        y = self.bu_dec_l4(self.bu_br_l4(upsample_to(y, e1) + self.merge_enc_dec_l4(e1)))  # (N, classes, H/2, W/2)
        return F.interpolate(y, size, mode="bilinear", align_corners=True)


class MergeClasses(nn.Module):
    """Wraps a segmenter: logits of merged classes, logsumexp over each group (= summed probabilities).

    `mapping[i]` is the new class of old class i; values >= len(class_names) (void) drop out of the prediction.
    `palette`: the mask colour of each new class (None: the writer's default).
    """

    task = "segment"

    def __init__(
        self,
        head: nn.Module,
        mapping: tuple[int, ...],
        class_names: tuple[str, ...],
        palette: tuple[tuple[int, int, int], ...] | None = None,
    ) -> None:
        super().__init__()
        if len(mapping) != head.num_classes:
            raise ValueError(f"mapping has {len(mapping)} entries, the head has {head.num_classes} classes")
        self.groups = [[old for old, new in enumerate(mapping) if new == c] for c in range(len(class_names))]
        if not all(self.groups):
            raise ValueError(
                "every merged class needs a source class; "
                f"empty: {[class_names[c] for c, g in enumerate(self.groups) if not g]}"
            )
        self.head, self.num_classes, self.class_names, self.palette = head, len(class_names), class_names, palette

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(x)  # (N, old, H, W)
        return torch.stack([logits[:, group].logsumexp(1) for group in self.groups], 1)  # (N, new, H, W)


def default_weights(name: str) -> Path:
    """An EdgeNets weights file under weights/espnetv2 of the shared data folder (`datasets.data_root`)."""
    from fastdenoise.datasets import data_root

    root = data_root()
    if root is None:
        raise ValueError(f"ESPNetv2: pass the weights path ({name}) or set FASTDENOISE_DATA")
    return root / "weights" / "espnetv2" / name


def espnetv2_voc(weights: Path | None = None) -> ESPNetv2:
    """ESPNetv2 s=2.0 trained on Pascal VOC 2012 at 384x384 (21 classes), eval mode."""
    model = ESPNetv2(len(VOC_CLASSES), VOC_CLASSES)
    return load_strict(
        model,  # type: ignore[return-value]
        weights if weights is not None else default_weights(VOC_WEIGHTS),
    )


def espnetv2_cityscapes(weights: Path | None = None) -> ESPNetv2:
    """ESPNetv2 s=2.0 trained on Cityscapes at 1024x512 (19 classes + background), eval mode."""
    model = ESPNetv2(len(CITYSCAPES_CLASSES), CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)
    return load_strict(
        model,  # type: ignore[return-value]
        weights if weights is not None else default_weights(CITYSCAPES_WEIGHTS),
    )


def espnetv2_camvid(weights: Path | None = None) -> MergeClasses:
    """The Cityscapes ESPNetv2 with its 20 classes merged into CamVid's 11 (CITYSCAPES_TO_CAMVID)."""
    return MergeClasses(espnetv2_cityscapes(weights), CITYSCAPES_TO_CAMVID, CAMVID_CLASSES, CAMVID_PALETTE).eval()


def default_segmenter_weights(head: str, data_root: Path) -> Path | None:
    """The EdgeNets file under data_root/weights/espnetv2 for an espnetv2-* head; None for other heads (their
    default)."""
    files = {
        "espnetv2-voc": VOC_WEIGHTS,
        "espnetv2-cityscapes": CITYSCAPES_WEIGHTS,
        "espnetv2-camvid": CITYSCAPES_WEIGHTS,
    }
    return Path(data_root) / "weights" / "espnetv2" / files[head] if head in files else None


def find_segmenter_weights(head: str, data: Path) -> Path | None:
    """The EdgeNets file for an espnetv2-* head under $FASTDENOISE_DATA, else under the nearest folder above `data`
    that is the shared data folder (`datasets.data_root`); None if it is not there."""
    from fastdenoise.datasets import data_root

    root = data_root(data)
    path = default_segmenter_weights(head, root) if root is not None else None
    return path if path is not None and path.is_file() else None

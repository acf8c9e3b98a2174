"""The denoiser of Liu et al. (IJCAI 2018): a three-scale U-Net-like colour CNN that learns the residual."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STRIDE = 4  # two stride-2 downsamplings: H and W are padded to a multiple of this


@dataclass(frozen=True)
class DenoiserSpec:
    """Channel widths; the defaults are the authors' released network (1.03M parameters)."""

    in_channels: int = 3
    c0: int = 64  # full scale, 5x5, no BN
    c1: int = 128  # 1/2 scale encoder
    c2: int = 128  # 1/4 scale encoder
    mid: int = 32  # bottleneck width at 1/2 and 1/4 scale
    up2: int = 32  # deconv 1/4 -> 1/2
    c3: int = 256  # 1/2 scale decoder
    mid3: int = 64  # decoder bottleneck width
    up1: int = 64  # deconv 1/2 -> full
    noise_map: bool = False  # one more input channel: the noise level sigma/255 at every pixel (as FFDNet takes it)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "noise_map":
                if not isinstance(value, bool):
                    raise ValueError(f"DenoiserSpec.noise_map must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DenoiserSpec.{name} must be a positive int, got {value!r}")


class ConvBnAct(nn.Sequential):
    """conv -> BN -> ReLU (BN becomes Identity after `fold_bn`)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, *, bn: bool = True, act: bool = True) -> None:
        conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=not bn)
        super().__init__(
            conv, nn.BatchNorm2d(cout) if bn else nn.Identity(), nn.ReLU(inplace=True) if act else nn.Identity()
        )


class DeconvBnAct(nn.Sequential):
    """4x4 stride-2 transposed conv (exact 2x upsampling) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 4, 2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand, identity shortcut, ReLU after the add (e.g. 128,32,32,128)."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.reduce = ConvBnAct(channels, mid, 1)
        self.conv = ConvBnAct(mid, mid, 3)
        self.expand = ConvBnAct(mid, channels, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.expand(self.conv(self.reduce(x))))


class Denoiser(nn.Module):
    """Maps a noisy RGB batch (N, 3, H, W) in [0, 1] to its denoised estimate; any H x W. With `spec.noise_map` it also
    takes the noise level: `sigma` (0-255 units, a number or one per image) or the level bound by `bind_sigma`."""

    def __init__(self, spec: DenoiserSpec | None = None) -> None:
        super().__init__()
        self.spec = s = spec or DenoiserSpec()
        self.conv0 = ConvBnAct(s.in_channels + s.noise_map, s.c0, 5, bn=False)
        if s.noise_map:  # the level bind_sigma sets: a constant of exports and backends (not saved with the weights)
            self.register_buffer("bound_sigma", torch.full((), float("nan")), persistent=False)
        self.bound = False
        self.down1 = ConvBnAct(s.c0, s.c1, 3, stride=2)
        self.enc1 = Bottleneck(s.c1, s.mid)
        self.down2 = ConvBnAct(s.c1, s.c2, 3, stride=2)
        self.enc2 = Bottleneck(s.c2, s.mid)
        self.up2 = DeconvBnAct(s.c2, s.up2)
        self.fuse1 = ConvBnAct(s.up2 + s.c1, s.c3, 3)
        self.dec1 = Bottleneck(s.c3, s.mid3)
        self.up1 = DeconvBnAct(s.c3, s.up1)
        self.head = ConvBnAct(s.up1 + s.c0, s.in_channels, 3, bn=False, act=False)

    def forward(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % STRIDE, -w % STRIDE
        y = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        if self.spec.noise_map:
            y = torch.cat([y, self.level_map(y, sigma)], 1)  # (N, 4, H, W)
        f0 = self.conv0(y)  # (N, 64, H, W)
        f1 = self.enc1(self.down1(f0))  # (N, 128, H/2, W/2)
        f2 = self.enc2(self.down2(f1))  # (N, 128, H/4, W/4)
        g1 = self.dec1(self.fuse1(torch.cat([self.up2(f2), f1], 1)))  # (N, 256, H/2, W/2)
        r = self.head(torch.cat([self.up1(g1), f0], 1))  # (N, 3, H, W): the residual
        return x + r[..., :h, :w]

    def level_map(self, y: Tensor, sigma: Tensor | float | None) -> Tensor:
        """(N, 1, H, W): each image's noise level / 255 at every pixel."""
        if sigma is None and not self.bound:
            raise ValueError("this denoiser takes the noise level: pass sigma, or bind one with bind_sigma")
        level = self.bound_sigma if sigma is None else torch.as_tensor(sigma, device=y.device)
        level = level.to(y.dtype).reshape(-1, 1, 1, 1) / 255.0
        return level.expand(y.shape[0], 1, y.shape[-2], y.shape[-1])


def bind_sigma(model: Denoiser, sigma: float) -> Denoiser:
    """A copy of a noise-map denoiser that takes x alone and denoises at `sigma` (0-255): every backend and export runs
    it as it runs the blind one (the level is a constant of the graph)."""
    if not model.spec.noise_map:
        raise ValueError("bind_sigma: this denoiser is blind (no noise-map input)")
    bound = copy.deepcopy(model)
    bound.bound_sigma.fill_(float(sigma))
    bound.bound = True
    return bound


def with_noise_map(blind: Denoiser) -> Denoiser:
    """The noise-map variant of a blind denoiser, computing exactly what it computes (the level's weights are zero)."""
    model = Denoiser(replace(blind.spec, noise_map=True)).to(next(blind.parameters()).device)
    state = blind.state_dict()
    weight = state["conv0.0.weight"]  # (c0, 3, 5, 5) -> (c0, 4, 5, 5)
    state["conv0.0.weight"] = torch.cat([weight, torch.zeros_like(weight[:, :1])], 1)
    model.load_state_dict(state)
    return model.train(blind.training)


def fold_bn(model: Denoiser) -> Denoiser:
    """Return an eval-mode copy with every BatchNorm folded into the conv before it."""
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, (ConvBnAct, DeconvBnAct)) and isinstance(block[1], nn.BatchNorm2d):
            conv, bn = block[0], block[1]
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias.detach() - bn.running_mean * scale
            bias = shift if conv.bias is None else conv.bias.detach() * scale + shift
            # Conv2d weight is (out, in, kh, kw); ConvTranspose2d weight is (in, out, kh, kw).
            out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
            shape = [1] * conv.weight.dim()
            shape[out_dim] = -1
            conv.weight = nn.Parameter(conv.weight.detach() * scale.reshape(shape))
            conv.bias = nn.Parameter(bias)
            block[1] = nn.Identity()
    return folded


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_pixel(spec: DenoiserSpec | None = None) -> int:
    """Multiply-accumulates per input pixel (x2 for FLOPs; 441 GFLOP per megapixel for the defaults)."""
    s = spec or DenoiserSpec()
    full = 25 * (s.in_channels + s.noise_map) * s.c0 + 9 * (s.up1 + s.c0) * s.in_channels
    half = (
        9 * s.c0 * s.c1
        + (2 * s.c1 * s.mid + 9 * s.mid**2)
        + 9 * (s.up2 + s.c1) * s.c3
        + (2 * s.c3 * s.mid3 + 9 * s.mid3**2)
    )
    quarter = 9 * s.c1 * s.c2 + (2 * s.c2 * s.mid + 9 * s.mid**2)
    # A 4x4 stride-2 deconv costs 16 * cin * cout MACs per *input* pixel.
    deconv = 16 * s.c3 * s.up1 / 4 + 16 * s.c2 * s.up2 / 16
    return int(full + half / 4 + quarter / 16 + deconv)

"""The denoiser's forward pass as 16 fused Triton launches on NHWC activations, weights packed once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.devices import canonical_device
from fastdenoise.kernels import conv2d, deconv2x
from fastdenoise.kernels._triton import DTYPES, interpreting
from fastdenoise.models.denoiser import STRIDE, Bottleneck, Denoiser


@dataclass(frozen=True)
class PackedConv:
    """One conv(+folded BN)(+ReLU) block: weight in the kernel's layout and compute dtype, fp32 bias."""

    weight: Tensor  # conv: (KH, KW, C_in, C_out); deconv: (4, 4 * C_in, C_out)
    bias: Tensor  # (C_out,) float32
    stride: int
    relu: bool


def pack_block(block: nn.Module, device: torch.device, dtype: torch.dtype) -> PackedConv:
    """A BN-folded ConvBnAct / DeconvBnAct, i.e. (conv, Identity, ReLU or Identity) -> PackedConv."""
    conv, norm, act = block.children()
    if not isinstance(norm, nn.Identity):
        raise ValueError("TritonBackend needs a BN-folded model: pass fastdenoise.models.denoiser.fold_bn(model)")
    if isinstance(conv, nn.ConvTranspose2d):
        weight = deconv2x.pack_weight(conv.weight.detach().to(device), dtype)
    elif isinstance(conv, nn.Conv2d):
        weight = conv2d.pack_weight(conv.weight.detach().to(device), dtype)
    else:
        raise TypeError(f"expected a Conv2d or ConvTranspose2d block, got {type(conv).__name__}")
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[-1])
    return PackedConv(
        weight=weight,
        bias=bias.to(device=device, dtype=torch.float32).contiguous(),
        stride=conv.stride[0],
        relu=isinstance(act, nn.ReLU),
    )


def pack_bottleneck(block: Bottleneck, device: torch.device, dtype: torch.dtype) -> tuple[PackedConv, ...]:
    return tuple(pack_block(part, device, dtype) for part in (block.reduce, block.conv, block.expand))


def run_conv(x: Tensor, layer: PackedConv, *, residual: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    return conv2d.conv2d(x, layer.weight, layer.bias, stride=layer.stride, relu=layer.relu, residual=residual, out=out)


def run_bottleneck(x: Tensor, layers: tuple[PackedConv, ...], out: Tensor | None = None) -> Tensor:
    """relu(x + expand(conv(reduce(x)))): the add and ReLU ride in expand's epilogue. x, out (N, h, w, C)."""
    reduce, conv, expand = layers
    hidden = run_conv(run_conv(x, reduce), conv)  # (N, h, w, mid) twice: the only extra DRAM round trips
    return conv2d.conv2d(hidden, expand.weight, expand.bias, relu=True, residual=x, out=out)


class TritonBackend:
    """BN-folded `Denoiser` on fused Triton kernels: (N, 3, H, W) float32 -> (N, 3, H, W) float32, any H x W.

    Activations are NHWC in `dtype` (fp32, fp16 or bf16) with fp32 accumulation. The two concatenations are
    preallocated buffers that their producers write into (deconv into the front channels, the skip branch behind),
    and the head adds the input and crops in its epilogue, writing the float32 NCHW result directly.
    """

    def __init__(self, model: Denoiser, device: torch.device, dtype: torch.dtype) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype}")
        device = canonical_device(device)  # 'cuda' -> 'cuda:0', what the input tensors report
        if device.type != "cuda" and not interpreting():
            raise ValueError(f"Triton kernels need a CUDA device, got {device} (TRITON_INTERPRET=1 runs them on CPU)")
        self.device, self.dtype = device, dtype
        self.spec = model.spec
        self.conv0, self.down1, self.down2, self.up2, self.fuse1, self.up1, self.head = (
            pack_block(block, device, dtype)
            for block in (model.conv0, model.down1, model.down2, model.up2, model.fuse1, model.up1, model.head)
        )
        self.enc1, self.enc2, self.dec1 = (
            pack_bottleneck(block, device, dtype) for block in (model.enc1, model.enc2, model.dec1)
        )

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> Tensor:
        s = self.spec
        if x.dim() != 4 or x.shape[1] != s.in_channels or x.dtype != torch.float32 or x.device != self.device:
            expected = f"float32 (N, {s.in_channels}, H, W) on {self.device}"
            raise ValueError(f"expected {expected}, got {x.dtype} {tuple(x.shape)} on {x.device}")
        batch, _, h, w = x.shape
        pad_h, pad_w = -h % STRIDE, -w % STRIDE
        # 12 bytes per pixel; folding the replicate padding into conv0's loads would save this copy.
        y = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        hp, wp = h + pad_h, w + pad_w
        nhwc = lambda t: t.permute(0, 2, 3, 1)  # a view: NCHW memory read through NHWC strides

        cat0 = torch.empty((batch, hp, wp, s.up1 + s.c0), device=x.device, dtype=self.dtype)  # [up1(g1), f0]
        cat1 = torch.empty((batch, hp // 2, wp // 2, s.up2 + s.c1), device=x.device, dtype=self.dtype)  # [up2(f2), f1]
        f0 = run_conv(nhwc(y), self.conv0, out=cat0[..., s.up1 :])  # (N, Hp, Wp, c0), read straight from fp32 NCHW
        f1 = run_bottleneck(run_conv(f0, self.down1), self.enc1, out=cat1[..., s.up2 :])  # (N, Hp/2, Wp/2, c1)
        f2 = run_bottleneck(run_conv(f1, self.down2), self.enc2)  # (N, Hp/4, Wp/4, c2)
        deconv2x.deconv2x(f2, self.up2.weight, self.up2.bias, relu=self.up2.relu, out=cat1[..., : s.up2])
        g1 = run_bottleneck(run_conv(cat1, self.fuse1), self.dec1)  # (N, Hp/2, Wp/2, c3)
        deconv2x.deconv2x(g1, self.up1.weight, self.up1.bias, relu=self.up1.relu, out=cat0[..., : s.up1])
        out = torch.empty((batch, s.in_channels, h, w), device=x.device, dtype=torch.float32)
        run_conv(cat0, self.head, residual=nhwc(x), out=nhwc(out))  # x + head(...)[:h, :w], float32 NCHW
        return out

"""Triton kernels vs PyTorch eager (cuDNN) and torch.compile on the denoiser's real layer shapes, and the whole backend.

GPU only: without CUDA every benchmark skips (interpreter timings say nothing about speed).

    pytest bench/bench_kernels.py --benchmark-json=bench/kernels.json          # all: ~50 torch.compile builds
    pytest bench/bench_kernels.py -k "not compiled" --benchmark-columns=min,median,rounds
    BENCH_DTYPE=fp16 pytest bench/bench_kernels.py -k backend

Each round runs the op CALLS_PER_ROUND times back to back, then synchronizes, so launch latency and the sync are
amortized: pytest-benchmark's times are per round; `extra_info` has ms per call, TFLOP/s, ideal-traffic GB/s (or MP/s
for the backend), the device and the versions, all written into the JSON next to pytest-benchmark's machine_info.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="kernel benchmarks need a CUDA GPU")
triton = pytest.importorskip("triton")

from fastdenoise.backends import BackendConfig, BackendKind, Precision, make_backend
from fastdenoise.kernels import conv2d, deconv2x
from fastdenoise.models.denoiser import Denoiser, DenoiserSpec

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAME = os.environ.get("BENCH_DTYPE", "bf16")
SIZES = {"1MP": (1024, 1024), "4MP": (2048, 2048)}
CALLS_PER_ROUND = {"layer": 20, "backend": 3}


@dataclass(frozen=True)
class Layer:
    """One conv(+BN folded)(+residual)(+ReLU) of the net; h, w is its *input* size."""

    name: str
    c_in: int
    c_out: int
    kernel: int
    stride: int
    h: int
    w: int
    residual: bool = False
    relu: bool = True
    transposed: bool = False  # 4x4 stride-2 ConvTranspose2d

    @property
    def out_size(self) -> tuple[int, int]:
        if self.transposed:
            return 2 * self.h, 2 * self.w
        k, s = self.kernel, self.stride
        return conv2d.output_size(self.h, k, s), conv2d.output_size(self.w, k, s)

    def flops(self) -> int:
        h_out, w_out = self.out_size
        taps = 4 if self.transposed else self.kernel**2  # each deconv output pixel sees a 2x2 window
        return 2 * h_out * w_out * taps * self.c_in * self.c_out

    def ideal_bytes(self, itemsize: int) -> int:
        """DRAM traffic if every tensor is touched once: read input, weights, residual; write output."""
        h_out, w_out = self.out_size
        weights = (16 if self.transposed else self.kernel**2) * self.c_in * self.c_out
        outputs = h_out * w_out * self.c_out * (2 if self.residual else 1)
        return itemsize * (self.h * self.w * self.c_in + weights + outputs)


def network_layers(spec: DenoiserSpec, h: int, w: int) -> list[Layer]:
    """The 16 layers of `Denoiser(spec)` for an h x w input (a multiple of 4), in forward order."""
    s, h2, w2, h4, w4 = spec, h // 2, w // 2, h // 4, w // 4

    def bottleneck(name: str, channels: int, mid: int, hh: int, ww: int) -> list[Layer]:
        return [
            Layer(f"{name}.reduce", channels, mid, 1, 1, hh, ww),
            Layer(f"{name}.conv", mid, mid, 3, 1, hh, ww),
            Layer(f"{name}.expand", mid, channels, 1, 1, hh, ww, residual=True),
        ]

    return [
        Layer("conv0", s.in_channels, s.c0, 5, 1, h, w),
        Layer("down1", s.c0, s.c1, 3, 2, h, w),
        *bottleneck("enc1", s.c1, s.mid, h2, w2),
        Layer("down2", s.c1, s.c2, 3, 2, h2, w2),
        *bottleneck("enc2", s.c2, s.mid, h4, w4),
        Layer("up2", s.c2, s.up2, 4, 2, h4, w4, transposed=True),
        Layer("fuse1", s.up2 + s.c1, s.c3, 3, 1, h2, w2),
        *bottleneck("dec1", s.c3, s.mid3, h2, w2),
        Layer("up1", s.c3, s.up1, 4, 2, h2, w2, transposed=True),
        Layer("head", s.up1 + s.c0, s.in_channels, 3, 1, h, w, residual=True, relu=False),
    ]


def layer_ops(layer: Layer, dtype: torch.dtype, device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    """{"eager", "compiled", "triton"}: zero-argument calls of the same layer on the same NHWC data."""
    x = torch.randn(1, layer.h, layer.w, layer.c_in, device=device, dtype=dtype)
    h_out, w_out = layer.out_size
    residual = torch.randn(1, h_out, w_out, layer.c_out, device=device, dtype=dtype) if layer.residual else None
    fan_in = layer.c_in * (4 if layer.transposed else layer.kernel**2)
    k = layer.kernel
    shape = (layer.c_in, layer.c_out, 4, 4) if layer.transposed else (layer.c_out, layer.c_in, k, k)
    weight = (torch.randn(shape, device=device) / fan_in**0.5).to(dtype).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(layer.c_out, device=device)

    # PyTorch side: NCHW views of the NHWC memory (channels_last), bias in the compute dtype, unfused add and ReLU.
    x_nchw, b_torch = x.permute(0, 3, 1, 2), bias.to(dtype)
    r_nchw = residual.permute(0, 3, 1, 2) if residual is not None else None

    def torch_layer(x_nchw: torch.Tensor, r_nchw: torch.Tensor | None) -> torch.Tensor:
        if layer.transposed:
            y = F.conv_transpose2d(x_nchw, weight, b_torch, stride=2, padding=1)
        else:
            y = F.conv2d(x_nchw, weight, b_torch, stride=layer.stride, padding=layer.kernel // 2)
        if r_nchw is not None:
            y = y + r_nchw
        return F.relu(y) if layer.relu else y

    compiled = torch.compile(torch_layer, dynamic=False)
    if layer.transposed:
        packed = deconv2x.pack_weight(weight)
        fused = lambda: deconv2x.deconv2x(x, packed, bias, relu=layer.relu)
    else:
        packed = conv2d.pack_weight(weight)
        fused = lambda: conv2d.conv2d(x, packed, bias, stride=layer.stride, relu=layer.relu, residual=residual)
    return {"eager": lambda: torch_layer(x_nchw, r_nchw), "compiled": lambda: compiled(x_nchw, r_nchw), "triton": fused}


def environment() -> dict[str, str]:
    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
        "dtype": DTYPE_NAME,
    }


def timed(benchmark, fn: Callable[[], object], calls: int) -> float:
    """Benchmark `calls` back-to-back calls + one sync per round; return the median seconds per call."""

    def run() -> None:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()

    run()  # compile / autotune / cuDNN heuristics outside the timing
    benchmark.pedantic(run, rounds=20, warmup_rounds=2, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, untimed
        return float("nan")
    return benchmark.stats.stats.median / calls


LAYER_CASES = [(size, layer.name) for size in SIZES for layer in network_layers(DenoiserSpec(), *SIZES[size])]


@pytest.mark.parametrize("impl", ["eager", "compiled", "triton"])
@pytest.mark.parametrize(("size", "name"), LAYER_CASES, ids=[f"{s}-{n}" for s, n in LAYER_CASES])
def test_layer(benchmark, size: str, name: str, impl: str) -> None:
    dtype, device = DTYPES[DTYPE_NAME], torch.device("cuda")
    layer = next(layer for layer in network_layers(DenoiserSpec(), *SIZES[size]) if layer.name == name)
    benchmark.group = f"layer {size} {name}"
    benchmark.extra_info.update(environment(), layer=repr(layer))

    seconds = timed(benchmark, layer_ops(layer, dtype, device)[impl], CALLS_PER_ROUND["layer"])

    benchmark.extra_info.update(
        ms_per_call=seconds * 1e3,
        tflops=layer.flops() / seconds / 1e12,
        ideal_gbps=layer.ideal_bytes(dtype.itemsize) / seconds / 1e9,
    )


@pytest.mark.parametrize("kind", ["eager", "compiled", "triton"])
@pytest.mark.parametrize("size", list(SIZES))
def test_backend(benchmark, size: str, kind: str) -> None:
    """The whole denoiser (default widths, random weights) through `make_backend`, in megapixels per second."""
    h, w = SIZES[size]
    backend = make_backend(Denoiser(), BackendConfig(BackendKind(kind), device="cuda", precision=Precision(DTYPE_NAME)))
    x = torch.rand(1, 3, h, w, device="cuda")
    benchmark.group = f"backend {size}"
    benchmark.extra_info.update(environment())

    seconds = timed(benchmark, lambda: backend(x), CALLS_PER_ROUND["backend"])

    benchmark.extra_info.update(ms_per_call=seconds * 1e3, megapixels_per_s=h * w / 1e6 / seconds)

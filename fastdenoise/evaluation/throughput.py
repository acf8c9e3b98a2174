"""Timings of one benchmark run: the matmul peak, inference per backend x precision x batch x size, the naive
per-image loop and training steps; rows of rates (MP/s, images/s, GFLOP/s) for `fastdenoise.evaluation.benchmark`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from fastdenoise.backends import Backend, BackendConfig, BackendKind, Precision, make_backend
from fastdenoise.devices import DTYPES, cpu_has_bf16, resolve_amp
from fastdenoise.models.denoiser import Denoiser, DenoiserSpec, macs_per_pixel
from fastdenoise.training.fit import mse_loss, optimizer_step

Log = Callable[[str], None]


GFLOP_PER_MP = 2 * macs_per_pixel() / 1e3  # 441 GFLOP per megapixel for the default network


@dataclass(frozen=True)
class TrainMode:
    """One way of running a training step: eager or torch.compile'd, fp32 or an autocast dtype."""

    compile: bool = False
    amp: str = "off"  # off | bf16 | fp16

    def __post_init__(self) -> None:
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"TrainMode.amp must be one of off, bf16, fp16; got {self.amp!r}")

    @property
    def name(self) -> str:
        return f"{'compiled' if self.compile else 'eager'} {'fp32' if self.amp == 'off' else 'amp ' + self.amp}"


@dataclass(frozen=True)
class ThroughputCase:
    """One point of the inference grid: backend x precision x batch x resolution."""

    backend: str
    precision: str
    batch: int
    height: int
    width: int

    def __post_init__(self) -> None:
        BackendKind(self.backend), Precision(self.precision)  # raise ValueError naming the allowed values
        if self.batch < 1 or self.height < 4 or self.width < 4:
            raise ValueError(f"bad throughput case {self}")

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision} b{self.batch} {self.height}x{self.width}"

    @property
    def megapixels(self) -> float:
        return self.batch * self.height * self.width / 1e6


def synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_rounds(fn: Callable[[], object], rounds: int, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Seconds of each of `rounds` calls of fn (synchronized); warm up / compile before calling this."""
    times = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def measure_peak(device: torch.device, precisions: tuple[str, ...], n: int, rounds: int = 5) -> dict[str, float]:
    """GFLOP/s of the fastest of `rounds` n x n x n matmuls per precision: the machine's practical compute roof; fp32
    in the math fp32 convolutions use (TF32 where `tf32_convolutions`)."""
    peak = {}
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(0)
    for name in dict.fromkeys(("fp32", *precisions)):
        if device.type == "cpu" and name == "fp16":
            continue  # no native fp16 matmul on CPUs
        a = torch.randn(n, n, generator=generator).to(device, DTYPES[name])
        b = torch.randn(n, n, generator=generator).to(device, DTYPES[name])
        with matmul_math(tf32=name == "fp32" and tf32_convolutions(device)):
            torch.mm(a, b)
            seconds = min(time_rounds(partial(torch.mm, a, b), rounds, sync))
        peak[name] = 2 * n**3 / seconds / 1e9
    return peak


def tf32_convolutions(device: torch.device) -> bool:
    """Whether fp32 convolutions run in TF32 here: cuDNN's default on CUDA, while fp32 matmuls default to full fp32,
    a roof several times lower on tensor-core GPUs (against which an fp32 convolution showed 171% of its peak)."""
    return device.type == "cuda" and bool(torch.backends.cudnn.allow_tf32)


@contextmanager
def matmul_math(tf32: bool) -> Iterator[None]:
    """Inside, fp32 matmuls run in TF32 (torch's "high" matmul precision) when `tf32`; the setting is restored."""
    before = torch.get_float32_matmul_precision()
    if tf32:
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def backend_unavailable(kind: str, precision: str, device: torch.device) -> str | None:
    """Why this backend/precision cannot be benchmarked here, or None."""
    kind = BackendKind(kind)
    if device.type == "cpu" and precision == "fp16":
        return "fp16 on CPU is emulated"
    if kind == BackendKind.onnxruntime and precision == "bf16":  # on any CPU: the backend's own reason first
        return "onnxruntime has no bfloat16 convolutions"
    if device.type == "cpu" and precision == "bf16" and not cpu_has_bf16():
        return "this CPU has no native bf16 (AVX512-BF16 or AMX)"
    if kind == BackendKind.triton and device.type != "cuda":
        return "Triton runs in its interpreter on CPU: timings say nothing about speed"
    if kind == BackendKind.tensorrt:
        if device.type != "cuda":
            return "TensorRT needs a CUDA GPU"
        try:
            import tensorrt
        except ImportError:
            return "TensorRT is not installed (pip install tensorrt)"
        if not hasattr(tensorrt, "Builder"):
            return "only tensorrt-stubs is installed, not TensorRT"
    if kind == BackendKind.openvino:
        if device.type != "cpu":
            return "the openvino backend runs on the CPU"
        if importlib.util.find_spec("openvino") is None:
            return "OpenVINO is not installed (pip install openvino)"
    if kind == BackendKind.onnxruntime:
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        if device.type == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("clang++")
    if kind == BackendKind.compiled and device.type == "cpu" and not compiler:
        return "torch.compile on CPU needs a C++ compiler (g++ or clang++)"
    return None


def gflop_per_mp(model: Denoiser) -> float:
    return 2 * macs_per_pixel(model.spec) / 1e3


def throughput_row(
    name: str, seconds: list[float], batch: int, height: int, width: int, gflop: float = GFLOP_PER_MP, **extra: object
) -> dict:
    """MP/s, images/s and achieved GFLOP/s (gflop per megapixel) of the median round."""
    median = statistics.median(seconds)
    megapixels = batch * height * width / 1e6
    return {
        "name": name,
        **extra,
        "batch": batch,
        "height": height,
        "width": width,
        "rounds": len(seconds),
        "seconds_median": median,
        "seconds_min": min(seconds),
        "seconds": list(seconds),  # every round
        "mp_per_s": megapixels / median,
        "images_per_s": batch / median,
        "gflops": megapixels * gflop / median,
    }


def measure_throughput(
    model: Denoiser, cases: list[ThroughputCase], device: torch.device, rounds: int, log: Log = print
) -> tuple[list[dict], list[dict]]:
    """Time every case through `make_backend`; returns (rows, skipped) where skipped rows carry the reason."""
    rows, skipped, built = [], [], {}
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(0)
    for case in cases:
        reason = backend_unavailable(case.backend, case.precision, device)
        key = (case.backend, case.precision)
        if reason is None and key not in built:
            try:
                cfg = BackendConfig(kind=case.backend, device=str(device), precision=case.precision)
                built[key] = make_backend(model, cfg)
            except (ImportError, ValueError, RuntimeError) as err:  # EngineError is a ValueError
                built[key] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        reason = reason or (built[key] if isinstance(built[key], str) else None)
        if reason is not None:
            skipped.append({"name": case.name, "backend": case.backend, "precision": case.precision, "reason": reason})
            continue
        backend: Backend = built[key]
        x = torch.rand(case.batch, 3, case.height, case.width, generator=generator).to(device)
        log(f"throughput {case.name}")
        backend(x)  # warm-up: torch.compile, ONNX export/session, TensorRT build, allocator
        seconds = time_rounds(partial(backend, x), rounds, sync)
        rows.append(
            throughput_row(
                case.name,
                seconds,
                case.batch,
                case.height,
                case.width,
                gflop_per_mp(model),
                backend=case.backend,
                precision=case.precision,
            )
        )
    return rows, skipped


def naive_loop(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The baseline every speed is a ratio of: the unfolded fp32 model, NCHW, one image per call, no_grad."""
    model = model.to(device).eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model(x[i : i + 1]) for i in range(x.shape[0])])

    return run


def measure_naive(
    model: Denoiser, sizes: tuple[tuple[int, int], ...], device: torch.device, rounds: int, log: Log = print
) -> list[dict]:
    rows = []
    run, sync = naive_loop(model, device), synchronizer(device)
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
        log(f"throughput naive {h}x{w}")
        run(x)
        seconds = time_rounds(partial(run, x), rounds, sync)
        rows.append(
            throughput_row(
                f"naive fp32 b1 {h}x{w}", seconds, 1, h, w, gflop_per_mp(model), backend="naive", precision="fp32"
            )
        )
    return rows


def train_step(model: nn.Module, mode: TrainMode, noisy: torch.Tensor, clean: torch.Tensor) -> Callable[[], float]:
    """One optimizer step of separate (MSE) training: `fastdenoise.training.fit.optimizer_step`, as `fit` runs it."""
    from fastdenoise.training.samplers import Batch

    device = noisy.device
    model.to(device).train().to(memory_format=torch.channels_last)
    batch = Batch(noisy.contiguous(memory_format=torch.channels_last), clean)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if mode.compile else model
    amp = resolve_amp(mode.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def step() -> float:
        return optimizer_step(forward, mse_loss, batch, optimizer, scaler, amp)[0].item()

    return step


def measure_training(
    modes: tuple[TrainMode, ...],
    batch: int,
    patch: int,
    device: torch.device,
    rounds: int,
    log: Log = print,
    spec: DenoiserSpec | None = None,
) -> tuple[list[dict], list[dict]]:
    """Samples/s and MP/s of training steps of a fresh Denoiser(spec) on random patches (data loading excluded)."""
    rows, skipped = [], []
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 3, patch, patch, generator=generator)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=generator)
    for mode in modes:
        name = f"train {mode.name} b{batch} {patch}x{patch}"
        reason = backend_unavailable(
            "compiled" if mode.compile else "eager", "fp32" if mode.amp == "off" else mode.amp, device
        )
        if reason is not None:
            skipped.append({"name": name, "reason": reason})
            continue
        torch.manual_seed(0)
        model = Denoiser(spec)
        step = train_step(model, mode, noisy.to(device), clean.to(device))
        log(name)
        step(), step()  # compile forward and backward; Adam's state allocated
        seconds = time_rounds(step, rounds, synchronizer(device))
        row = throughput_row(
            name, seconds, batch, patch, patch, gflop_per_mp(model), compile=mode.compile, amp=mode.amp
        )
        row["samples_per_s"] = row.pop("images_per_s")
        row["gflops"] *= 3  # forward + backward (input and weight gradients) ~ 3x the forward FLOPs
        rows.append(row)
    return rows, skipped

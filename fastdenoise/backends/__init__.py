"""Inference backends behind one interface; `make_backend` is the one place a backend name becomes an object."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from fastdenoise.choices import BackendKind, Precision
from fastdenoise.devices import dtype_of, resolve_device
from fastdenoise.models.denoiser import Denoiser, fold_bn

if TYPE_CHECKING:
    from fastdenoise.models.zoo import SigmaRouter, WeightsPlan


class Backend(Protocol):
    """(N, 3, H, W) float32 noisy batch on `device` -> denoised float32 batch of the same shape on `device`."""

    device: torch.device

    def __call__(self, x: Tensor) -> Tensor: ...


# Backends that run a prebuilt file (`--engine`); the others build from the weights and would ignore one.
ENGINE_KINDS = (BackendKind.onnxruntime, BackendKind.openvino, BackendKind.tensorrt)


@dataclass(frozen=True)
class BackendConfig:
    """How to run the denoiser; maps one to one onto `fastdenoise run` options."""

    kind: BackendKind = BackendKind.eager
    device: str = "auto"
    precision: Precision = Precision.auto
    channels_last: bool = True
    engine: str | None = None  # a prebuilt TensorRT engine or ONNX file, where the backend takes one
    trust_engine: bool = False  # run an ONNX file without fastdenoise's metadata (made elsewhere) all the same

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", BackendKind(self.kind))
        object.__setattr__(self, "precision", Precision(self.precision))
        if self.engine is not None:
            if not Path(self.engine).is_file():
                raise ValueError(f"{self.engine}: no such engine file")
            if self.kind not in ENGINE_KINDS:
                raise ValueError(
                    f"--engine is for the {', '.join(k.value for k in ENGINE_KINDS)} backends, not {self.kind.value}"
                )


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPUs and on CPUs with native bf16 (PSNR within 0.02 dB of fp32, see bench/), else fp32."""
    if precision == Precision.int8:
        raise ValueError("int8 is a quantized model, not a compute dtype: it runs on --backend openvino (or auto)")
    return dtype_of(Precision(precision).value, device)


class TorchBackend:
    """PyTorch with BN folded, channels_last and autocast; optionally torch.compile'd (dynamic shapes)."""

    def __init__(
        self, model: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool, compile: bool
    ) -> None:
        self.device, self.dtype, self.channels_last = device, dtype, channels_last
        self.model = model.to(device).eval()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model, dynamic=True) if compile else self.model

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            y = self.forward(x)
        return y.float().contiguous()


def require_own_onnx(path: Path) -> None:
    """Refuse an ONNX file without the metadata `fastdenoise export-onnx` writes (which weights, which graph): a graph
    made elsewhere may compute anything, e.g. hand its input back as the "denoised" output."""
    from fastdenoise.engines.export import onnx_metadata
    from fastdenoise.engines.runtime import guard_onnx

    if not path.is_file():
        return  # the backend says so
    if "weights_sha256" not in guard_onnx(path, lambda: onnx_metadata(path)):
        raise ValueError(
            f"{path}: no fastdenoise metadata (not written by `fastdenoise export-onnx`), so nothing says which "
            "weights it holds or that it denoises; pass --trust-engine to run it anyway"
        )


def make_backend(model: Denoiser, cfg: BackendConfig) -> Backend:
    """Build the configured backend around a trained denoiser (BN is folded for every kind)."""
    device = resolve_device(cfg.device)
    int8 = cfg.precision == Precision.int8
    if int8 and cfg.kind not in (BackendKind.openvino, BackendKind.auto):
        raise ValueError(f"--precision int8 runs on --backend openvino (or auto), not {cfg.kind.value}")
    dtype = resolve_precision(Precision.auto if int8 else cfg.precision, device)  # int8: the hint for what stays float
    if cfg.kind == BackendKind.onnxruntime and cfg.precision == Precision.auto:
        dtype = torch.float16 if device.type == "cuda" else torch.float32  # onnxruntime has no bf16 convolutions
    folded = fold_bn(model)
    match cfg.kind:
        case BackendKind.eager:
            return TorchBackend(folded, device, dtype, cfg.channels_last, compile=False)
        case BackendKind.compiled:
            return TorchBackend(folded, device, dtype, cfg.channels_last, compile=True)
        case BackendKind.triton:
            from fastdenoise.kernels.backend import TritonBackend

            return TritonBackend(folded, device, dtype)
        case BackendKind.onnxruntime:
            from fastdenoise.engines.runtime import OnnxRuntimeBackend

            if cfg.engine is not None and not cfg.trust_engine:
                require_own_onnx(Path(cfg.engine))
            return OnnxRuntimeBackend(folded, device, dtype, cfg.engine)
        case BackendKind.tensorrt:
            from fastdenoise.engines.runtime import TensorRTBackend

            return TensorRTBackend(folded, device, dtype, cfg.engine)
        case BackendKind.openvino:
            from fastdenoise.backends.openvino import OpenVinoBackend

            return OpenVinoBackend(folded, device, dtype, cfg.engine, int8=int8, trust_engine=cfg.trust_engine)
        case BackendKind.auto:
            from fastdenoise.backends.auto import AutoBackend

            return AutoBackend(model, cfg, device)
    raise ValueError(f"unknown backend {cfg.kind!r}; choose one of {[k.value for k in BackendKind]}")


def load_network(weights: Path, level: float | None = None) -> Denoiser:
    """The denoiser in a weights file (.safetensors or checkpoint); a noise-map model bound to `level`, which it then
    needs (every backend and export runs the bound network unchanged)."""
    from fastdenoise.models.checkpoint import load_denoiser
    from fastdenoise.models.denoiser import bind_sigma

    network = load_denoiser(Path(weights))
    if network.spec.noise_map:
        if level is None:
            raise ValueError(f"{weights}: this model takes the noise level; give --sigma S (0-255)")
        network = bind_sigma(network, level)
    return network


def build_backend(network: Denoiser, cfg: BackendConfig, ensemble: bool = False) -> Backend:
    """The configured backend around a loaded denoiser; with `ensemble`, run on the 8 flips/rotations (zoo)."""
    from fastdenoise.models.zoo import SelfEnsemble

    backend = make_backend(network, cfg)
    return SelfEnsemble(backend) if ensemble else backend


def routed_backend(cfg: BackendConfig, ensemble: bool, weights: Path, level: float | None) -> Backend:
    """The backend a router builds when an image first needs `weights` (bound to `level`); a failure is a ValueError
    that names it, which stops the run as one at its start does."""
    try:
        return build_backend(load_network(weights, level), cfg, ensemble)
    except ImportError as err:
        raise ValueError(f"backend {cfg.kind.value!r} is not available here: {err}") from err
    except OSError as err:  # the model cache: a folder that is a file, a read-only disk, ...
        raise ValueError(f"{err.filename}: {err.strerror}" if err.filename else str(err)) from err


def sigma_router(plan: WeightsPlan, backend: Backend, cfg: BackendConfig, ensemble: bool = False) -> SigmaRouter | None:
    """The router of a run that picks weights per image (each image's estimated level, JPEG inputs), or None where one
    model runs all: `backend` (the plan's default weights') is reused, the others are built on its device, kind and
    precision when an image first needs them."""
    from fastdenoise.models.zoo import SigmaRouter, takes_level

    if not plan.estimate and plan.jpeg is None:
        return None
    same = replace(cfg, device=str(backend.device), engine=None, trust_engine=False)

    def build(weights: Path, level: float | None) -> Backend:  # one probe budget and summary for every weights'
        from fastdenoise.backends.auto import share_ledger

        built = routed_backend(same, ensemble, weights, level)
        share_ledger(built, backend)
        return built

    router = SigmaRouter(build, plan.choose, takes_level, jpeg=plan.jpeg, estimate=plan.estimate)
    router.built[Path(plan.choose(None)), None] = backend
    return router

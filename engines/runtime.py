"""TensorRT and ONNX Runtime backends: a float32 (N, 3, H, W) batch on `device` in, its denoised batch out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from fastdenoise.cache import trim
from fastdenoise.devices import canonical_device
from fastdenoise.models.denoiser import Denoiser, fold_bn

from .build import BuildConfig, EngineError, Profile, build_engine, current_target, require_tensorrt, verify_engine
from .export import (
    PRECISIONS,
    cached_denoiser_onnx,
    default_cache_dir,
    import_onnxruntime,
    onnx_metadata,
    onnx_session,
    weights_sha256,
)

T = TypeVar("T")


def check_weights(meta: dict, model: Denoiser, source: str) -> None:
    """Refuse an engine or ONNX file exported from other weights than the model the caller loaded."""
    built_from = meta.get("weights_sha256")
    if built_from and built_from != weights_sha256(fold_bn(model)):
        raise EngineError(
            f"{source}: exported from other weights (sha256 {built_from[:12]}...) than the ones loaded; "
            "pass the matching --weights or rebuild it from these"
        )
    if meta.get("kind", "denoiser") != "denoiser":
        raise EngineError(f"{source}: holds a {meta['kind']} graph; these backends run the denoiser alone")


def guard_onnx(path: Path, load: Callable[[], T]) -> T:
    """load(), with onnx's and onnxruntime's own exception types for unusable files turned into EngineError."""
    try:
        return load()
    except ImportError:
        raise
    except Exception as err:  # protobuf DecodeError, onnxruntime's Fail/InvalidGraph/NotImplemented... (no common base)
        raise EngineError(
            f"{path}: not usable by onnxruntime ({type(err).__name__}: {str(err).strip()[:300]})"
        ) from err


def check_batch(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(x.shape)}")


class TensorRTBackend:
    """A TensorRT engine run on torch's current CUDA stream with torch tensors bound by address; optional CUDA graph."""

    def __init__(
        self,
        model: Denoiser,
        device: torch.device,
        dtype: torch.dtype,
        engine: str | None,
        *,
        build: BuildConfig | None = None,
        cache_dir: Path | None = None,
        cuda_graph: bool = False,
    ) -> None:
        require_tensorrt()
        import tensorrt as trt

        if device.type != "cuda":
            raise ValueError(f"the tensorrt backend runs on CUDA devices, not {device}")
        self.device = canonical_device(device)
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        if engine is None:  # export and build on first use; later runs find both in the cache
            onnx_path = cached_denoiser_onnx(model, dtype, cache / "onnx")
            path = build_engine(onnx_path, build, cache_dir=cache / "engines", device=self.device)
        else:
            path = Path(engine)
        self.path = path
        self.meta = verify_engine(path, current_target(self.device))
        check_weights(self.meta, model, str(path))
        self.dtype = PRECISIONS[self.meta["precision"]]  # a given engine's precision wins over the requested one

        self.logger = trt.Logger(trt.Logger.WARNING)  # kept: TensorRT calls back into it for the runtime's life
        self.runtime = trt.Runtime(self.logger)
        if self.meta.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True  # version-compatible plans carry their own lean runtime
        with torch.cuda.device(self.device):
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise EngineError(f"{path}: TensorRT could not deserialize it (its log above says why)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"{path}: expected one input and one output, found {inputs} and {outputs}")
        (self.input,), (self.output,) = inputs, outputs
        for name in names:
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise EngineError(
                    f"{path}: tensor {name!r} is {self.engine.get_tensor_dtype(name)}, expected float32 I/O"
                )
        lo, opt, hi = ([d[i] for i in range(len(d))] for d in self.engine.get_tensor_profile_shape(self.input, 0))
        self.profile = Profile(tuple(lo), tuple(opt), tuple(hi))  # type: ignore[arg-type]  # 4-D, checked by Profile
        self.cuda_graph = cuda_graph
        self.graph: tuple[tuple[int, ...], torch.cuda.CUDAGraph, Tensor, Tensor] | None = None

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> Tensor:
        check_batch(x)
        lo, hi = self.profile.min, self.profile.max
        n, _, h, w = x.shape
        if not (lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3] and n >= lo[0]):
            raise ValueError(
                f"batch {n}x3x{h}x{w} is outside this engine's profile {self.profile.text}; run with --tile "
                f"{min(hi[2], hi[3]) - 3} or smaller, or build an engine whose max shape covers it"
            )
        x = x.to(self.device, torch.float32).contiguous()
        run = self.replay if self.cuda_graph else self.enqueue
        with torch.cuda.device(self.device):  # TensorRT launches on the current device
            parts = [run(chunk.contiguous()) for chunk in x.split(hi[0])]  # batches above the max go in parts
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def enqueue(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Run the engine on x on the current stream (asynchronously); returns out (allocated if None)."""
        shape = tuple(x.shape)
        if not self.context.set_input_shape(self.input, shape):
            raise ValueError(f"TensorRT refused input shape {shape} (profile {self.profile.text})")
        out = torch.empty(shape, device=self.device) if out is None else out
        self.context.set_tensor_address(self.input, x.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise EngineError("TensorRT execution failed (its log above says why)")
        return out

    def replay(self, x: Tensor) -> Tensor:
        """Run through a CUDA graph captured for this input shape; a new shape is captured anew, replacing it (one
        graph at a time: the context's shape-dependent state belongs to the shape it was last set up for)."""
        shape = tuple(x.shape)
        if self.graph is None or self.graph[0] != shape:
            static_in, static_out = torch.empty_like(x), torch.empty_like(x)
            static_in.copy_(x)
            self.enqueue(static_in, static_out)  # shape-dependent setup must happen before capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
                    raise EngineError("TensorRT execution failed during CUDA graph capture")
            self.graph = (shape, graph, static_in, static_out)
        _, graph, static_in, static_out = self.graph
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


class OnnxRuntimeBackend:
    """onnxruntime on the CPU, or on CUDA with tensors bound in place (IO binding) where onnxruntime-gpu is
    installed."""

    def __init__(
        self,
        model: Denoiser,
        device: torch.device,
        dtype: torch.dtype,
        engine: str | None,
        *,
        cache_dir: Path | None = None,
    ) -> None:
        import_onnxruntime()  # fail before exporting anything
        if engine is None:
            if dtype == torch.bfloat16:
                raise ValueError("onnxruntime has no bfloat16 convolutions; use --precision fp32 (or fp16)")
            root = Path(cache_dir) if cache_dir else default_cache_dir()
            path = cached_denoiser_onnx(model, dtype, root / "onnx")
            trim(root, keep=(path,))
        else:
            path = Path(engine)
            if not path.is_file():
                raise ValueError(f"{path}: no such ONNX file")
        self.path = path
        meta = guard_onnx(path, lambda: onnx_metadata(path))
        check_weights(meta, model, str(path))
        self.dtype = PRECISIONS[meta.get("precision", "fp32")]
        self.device = device
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in import_onnxruntime().get_available_providers():
                raise ImportError("this onnxruntime has no CUDA provider: pip install onnxruntime-gpu")
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.device = torch.device("cuda", index)
            providers: list = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        elif device.type == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"the onnxruntime backend runs on cpu or cuda, not {device}")
        self.session = guard_onnx(path, lambda: onnx_session(path, providers))
        (first,), (last,) = self.session.get_inputs(), self.session.get_outputs()
        if first.type != "tensor(float)" or last.type != "tensor(float)":
            raise EngineError(f"{path}: expected float32 input and output, found {first.type} and {last.type}")
        self.input, self.output = first.name, last.name

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> Tensor:
        check_batch(x)
        x = x.to(self.device, torch.float32).contiguous()
        if self.device.type == "cpu":
            (y,) = self.session.run([self.output], {self.input: x.numpy()})
            return torch.from_numpy(y)
        import numpy as np

        out = torch.empty_like(x)
        binding = self.session.io_binding()
        index = self.device.index
        binding.bind_input(self.input, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # onnxruntime runs on its own stream
        self.session.run_with_iobinding(binding)  # returns once its stream is done
        return out

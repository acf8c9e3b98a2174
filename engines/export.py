"""ONNX export of the denoiser, of any head and of a denoiser -> head cascade, with dynamic batch, height and width.

Two exporters, both tried with torch 2.13. "dynamo" (torch.export, the default since torch 2.9) gives the cleaner
graph and exports every head here, cascades included; "torchscript" (the deprecated tracer) is kept as a fallback
for the denoiser and simple heads. Shape arithmetic in the heads is integer-only and branch-free so torch.export
keeps it symbolic (see SameConv2d and adaptive_avg_pool in fastdenoise.models.heads); an export past `timeout` seconds
stops with ExportError instead of hanging. Both exporters bake in the `if pad_h or pad_w` branch of
Denoiser.forward as the example takes it, so the example's height and width must not be multiples of 4, and every
export is run through onnxruntime on other shapes (verify_onnx) before its file is written: a rejected export
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import logging
import os
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fastdenoise.cache import entry_problem, write_sidecar
from fastdenoise.choices import Exporter, values
from fastdenoise.devices import DTYPES
from fastdenoise.files import atomic_write, check_replaceable, note
from fastdenoise.models.denoiser import STRIDE, Denoiser, fold_bn

INPUT, OUTPUT = "image", "output"
DYNAMIC_DIMS = {0: "batch", 2: "height", 3: "width"}
PRECISIONS = DTYPES  # the engine's precision names are the package's
OPSET = 18  # TensorRT 10 and onnxruntime 1.18+ import it
BF16_OPSET = 22  # Conv and ConvTranspose accept bfloat16 from opset 22 on
PROBE_SHAPES = ((1, 3, 20, 28), (3, 3, 13, 6))  # a multiple of 4 and odd sizes, unlike the example
EXPORTERS = values(Exporter)
TORCHSCRIPT_MAX_OPSET = 20
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2}  # max |onnx - eager| / max(1, max |eager|)
TIMEOUT_S = 600.0  # head cascades take 30-70 s of CPU here; well past that, torch.export is stuck (as it was in sympy)


class ExportError(ValueError):
    """An export that failed or does not generalise to other shapes; the message says which and why."""


class ExportTimeout(BaseException):
    """Raised by the alarm inside the exporter; a BaseException so that no `except Exception` in torch swallows it."""


class CastIO(nn.Module):
    """Runs `inner` with weights and activations in `dtype`, float32 in and out (Cast nodes at the graph's edges)."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner.to(dtype), dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.to(self.dtype)).float()


class Cascade(nn.Module):
    """Denoiser -> head as one graph: noisy [0, 1] RGB (N, 3, H, W) -> the head's logits."""

    def __init__(self, denoiser: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.denoiser, self.head = denoiser, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.denoiser(x))


def precision_name(dtype: torch.dtype) -> str:
    for name, value in PRECISIONS.items():
        if value == dtype:
            return name
    raise ValueError(f"unsupported precision {dtype}; choose one of {list(PRECISIONS)}")


def weights_sha256(module: nn.Module) -> str:
    """Digest of a module's floating-point state as float32 (names, shapes, values), unsaved buffers included (the
    noise level `bind_sigma` binds)."""
    digest = hashlib.sha256()
    state = dict(module.state_dict())
    state |= {name: value for name, value in module.named_buffers() if name not in state}
    for name, value in sorted(state.items()):
        if value.is_floating_point():
            tensor = value.detach().float().cpu().contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    opset: int | None = None,
    example: Tensor | None = None,
    kind: str = "module",
    exporter: str = "dynamo",
    check: bool = True,
    probes: tuple[tuple[int, int, int, int], ...] = PROBE_SHAPES,
    timeout: float | None = TIMEOUT_S,
) -> Path:
    """Export module ((N, 3, H, W) float32 -> tensor) to ONNX with dynamic N, H, W; weights and compute in `dtype`.

    check: run the graph through onnxruntime on the `probes` shapes (unlike the example's) against eager before the
    file is written. timeout: seconds the exporter may take (None: no limit; enforced in the main thread only).
    """
    check_replaceable(Path(path))  # before minutes of export: a FIFO or device at path stays as it is
    require_onnx()
    import onnx

    precision = precision_name(dtype)
    opset = opset or (BF16_OPSET if dtype == torch.bfloat16 else OPSET)
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r}: choose one of {EXPORTERS}")
    if exporter == "torchscript" and (dtype == torch.bfloat16 or opset > TORCHSCRIPT_MAX_OPSET):
        raise ExportError(f"the torchscript exporter stops at opset {TORCHSCRIPT_MAX_OPSET}; bf16 needs 22: use dynamo")
    if example is None:
        example = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    n, _, h, w = example.shape
    if n < 2 or h % STRIDE == 0 or w % STRIDE == 0:
        raise ExportError(
            f"example shape {tuple(example.shape)}: batch must be >= 2 and height, width not multiples of {STRIDE}, "
            "else the exporter specialises the batch size or drops the padding branch"
        )
    module = copy.deepcopy(module).cpu().eval()
    wrapped = CastIO(copy.deepcopy(module), dtype).eval() if dtype != torch.float32 else module  # .to() is in place
    name = type(module).__name__
    try:
        with quiet_exporter(), time_limit(timeout):
            if exporter == "dynamo":
                proto = export_dynamo(wrapped, example.float().cpu(), opset)
            else:
                proto = export_torchscript(wrapped, example.float().cpu(), opset)
    except ExportTimeout:
        raise ExportError(
            f"ONNX export of {name} with the {exporter} exporter did not finish in {timeout:g} s; "
            "allow more time (--timeout, 0 for no limit) on a slow or busy machine"
        ) from None
    except Exception as err:  # torch.onnx raises its own error types per stage
        hint = "; the dynamo exporter keeps size arithmetic the tracer cannot" if exporter == "torchscript" else ""
        raise ExportError(f"ONNX export of {name} failed: {str(err).strip().splitlines()[0]}{hint}") from err
    for key, value in {
        "fastdenoise.kind": kind,
        "fastdenoise.precision": precision,
        "fastdenoise.weights_sha256": weights_sha256(module),
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [DYNAMIC_DIMS[i] for i in DYNAMIC_DIMS if not dims[i].dim_param]
    if fixed:
        raise ExportError(f"the exporter fixed the {', '.join(fixed)} dimension(s) of {name}")
    path = Path(path)
    blob = proto.SerializeToString()
    if check and dtype in TOLERANCE:  # onnxruntime has no bfloat16 convolutions to check with
        verify_onnx(blob, module, probes, TOLERANCE[dtype], source=path)  # before writing: no file for a rejected graph
    atomic_write(path, lambda handle: handle.write(blob))
    return path


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ExportTimeout in the block after `seconds` (SIGALRM: main thread only; elsewhere, or None/0, no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise ExportTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def export_dynamo(module: nn.Module, example: Tensor, opset: int) -> Any:  # -> onnx.ModelProto
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=(DYNAMIC_DIMS,),
        opset_version=opset,
        verbose=False,
        optimize=True,
    )
    assert program is not None  # dynamo=True always returns an ONNXProgram
    return program.model_proto


def export_torchscript(module: nn.Module, example: Tensor, opset: int) -> Any:  # -> onnx.ModelProto
    import onnx

    with torch.no_grad():
        out = module(example)
    # Output axes: batch always; height and width where the output keeps the input's (denoiser, segmenters).
    out_axes = {0: "batch"} | ({2: "height", 3: "width"} if out.shape[2:] == example.shape[2:] else {})
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.onnx"
        torch.onnx.export(
            module,
            (example,),
            str(file),
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: DYNAMIC_DIMS, OUTPUT: out_axes},
            opset_version=opset,
        )
        return onnx.load(str(file))


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Mute the exporter's notes that are not ours to act on (torchvision ops it skips, torch-internal deprecations)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the pad branch: see the docstring
            yield
    finally:
        registration.setLevel(level)


def verify_onnx(
    model: Path | bytes,
    module: nn.Module,
    shapes: tuple[tuple[int, ...], ...],
    tolerance: float,
    *,
    source: Path | None = None,
) -> float:
    """Run an ONNX file or serialized graph through onnxruntime (CPU) and module eagerly on random inputs; raise
    ExportError (naming `source`, default the file) on a mismatch; returns the largest relative error."""
    if source is None:
        source = Path("<onnx>") if isinstance(model, bytes) else Path(model)
    session = onnx_session(model)
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for shape in shapes:
        x = torch.rand(shape, generator=generator)
        try:
            (got,) = session.run([OUTPUT], {INPUT: x.numpy()})
        except Exception as err:  # onnxruntime's error types share no base class
            raise ExportError(
                f"{source}: onnxruntime fails on input {shape} ({str(err).strip()[:300]}); "
                "the exported graph does not generalise to this shape"
            ) from err
        with torch.no_grad():
            ref = module(x).float()
        if tuple(got.shape) != tuple(ref.shape):
            raise ExportError(f"{source}: output shape {tuple(got.shape)} != eager {tuple(ref.shape)} on input {shape}")
        error = float((torch.from_numpy(got) - ref).abs().max()) / max(1.0, float(ref.abs().max()))
        if not error <= tolerance:
            raise ExportError(
                f"{source}: ONNX output differs from eager by {error:.3g} (> {tolerance}) for input {shape}; "
                "the exported graph does not generalise to this shape"
            )
        worst = max(worst, error)
    return worst


def import_onnxruntime() -> Any:
    """The onnxruntime module, or an ImportError that says what to install."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)"
        ) from err
    return onnxruntime


def require_onnx() -> None:
    """Raise an ImportError that says what to install when the exporter's dependencies are missing."""
    for name in ("onnx", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(f"ONNX export needs {name}: pip install onnx onnxscript (or fastdenoise[onnx])") from err


def onnx_session(model: Path | bytes, providers: list | None = None) -> Any:
    """An onnxruntime.InferenceSession on an ONNX file or serialized graph (CPU unless providers say otherwise)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])


def export_denoiser(
    model: Denoiser, path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32, **kwargs
) -> Path:
    """Export the BN-folded denoiser; padding to a multiple of 4 and the crop stay in the graph."""
    return export_onnx(fold_bn(model), path, dtype=dtype, kind="denoiser", **kwargs)


def export_cascade(
    denoiser: Denoiser, head: nn.Module, path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32, **kwargs
) -> Path:
    """Export BN-folded denoiser -> head (an nn.Module from [0, 1] RGB to logits) as one graph."""
    return export_onnx(Cascade(fold_bn(denoiser), head), path, dtype=dtype, kind="cascade", **kwargs)


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The fastdenoise.* metadata of an ONNX file ({} for files exported elsewhere)."""
    require_onnx()
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {
        p.key.removeprefix("fastdenoise."): p.value for p in proto.metadata_props if p.key.startswith("fastdenoise.")
    }


def cached_denoiser_onnx(model: Denoiser, dtype: torch.dtype, cache_dir: Path) -> Path:
    """The denoiser's ONNX file in cache_dir, keyed by its weights and precision; exported on first use, and again
    (noted) where the cached file's sidecar or metadata does not vouch for it."""
    folded = fold_bn(model)
    digest = weights_sha256(folded)
    path = denoiser_onnx_path(digest, dtype, cache_dir)
    facts = {"kind": "onnx-export", "weights_sha256": digest, "precision": precision_name(dtype)}
    if path.is_file():
        problem = entry_problem(path, facts, (path,)) or cached_problem(path, digest)
        if problem is None:
            return path
        note(f"{path}: {problem}; exporting it again")
    export_onnx(folded, path, dtype=dtype, kind="denoiser")
    write_sidecar(path, facts, (path,))
    return path


def denoiser_onnx_path(digest: str, dtype: torch.dtype, cache_dir: Path) -> Path:
    """Where `cached_denoiser_onnx` keeps the export of the weights with this digest."""
    return Path(cache_dir) / f"denoiser_{digest[:16]}_{precision_name(dtype)}.onnx"


def cached_problem(path: Path, digest: str) -> str | None:
    """Why a cached ONNX file is not the export of the weights with this digest (None: it is)."""
    try:
        meta = onnx_metadata(path)
    except ImportError:
        raise
    except Exception as err:  # protobuf's DecodeError and onnx's own errors share no base class
        return f"not a readable ONNX file ({type(err).__name__}: {str(err).strip().splitlines()[0][:120]})"
    if meta.get("weights_sha256") != digest:
        return "not an export of these weights"
    return None


def default_cache_dir() -> Path:
    """$FASTDENOISE_CACHE, else $XDG_CACHE_HOME/fastdenoise, else ~/.cache/fastdenoise."""
    if "FASTDENOISE_CACHE" in os.environ:
        return Path(os.environ["FASTDENOISE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastdenoise"

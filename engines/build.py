"""TensorRT engines for the GPU this runs on: strongly typed builds from ONNX, cached per target, checked on load.

Each engine `<gpu>_sm<cc>_trt<version>_<precision>_<key>.engine` has a JSON sidecar recording what it was built from
and for (GPU, compute capability, TensorRT version, ONNX sha256, profile, precision, flags) and its own sha256;
an engine is loaded only through its sidecar, so a foreign, stale or corrupt file fails with EngineError.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastdenoise.choices import HardwareCompatibility, values
from fastdenoise.files import atomic_write
from fastdenoise.files import sha256_file as file_sha256
from fastdenoise.models.denoiser import STRIDE

from .export import PRECISIONS, default_cache_dir, onnx_metadata

FORMAT = "fastdenoise-trt-engine-v1"
HARDWARE_COMPATIBILITY = values(HardwareCompatibility)
INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt (wheels come from NVIDIA's index, https://pypi.nvidia.com)"
)
Shape = tuple[int, int, int, int]


class EngineError(ValueError):
    """An engine that cannot be built or used here; the message names the file and the reason."""


def require_tensorrt() -> None:
    """Raise an ImportError that says what to install when TensorRT's Python bindings are missing."""
    try:
        import tensorrt
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    if not hasattr(tensorrt, "Builder"):  # tensorrt-stubs alone leaves a `tensorrt` namespace package with no bindings
        raise ImportError(f"{INSTALL_HINT} (found a `tensorrt` package without its bindings: only tensorrt-stubs?)")


@dataclass(frozen=True)
class Profile:
    """Input shapes (N, 3, H, W) an engine accepts, min <= opt <= max per dimension; TensorRT tunes for opt."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            shape = tuple(int(v) for v in getattr(self, name))
            if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
                raise ValueError(f"profile {name} shape {shape}: expected N x 3 x H x W with positive sizes")
            object.__setattr__(self, name, shape)
        if not all(lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile {self.text}: needs min <= opt <= max in every dimension")

    @classmethod
    def for_tiles(cls, tile: int = 1024, batch: int = 4) -> Profile:
        """What `fastdenoise run --tile T --batch B` feeds a backend: up to B images or tiles of at most T+3 px a
        side."""
        if tile < 1 or batch < 1:
            raise ValueError(f"tile ({tile}) and batch ({batch}) must be positive")
        edge = tile + STRIDE - 1  # the last tile of a row ends at the border, up to STRIDE - 1 px longer
        return cls((1, 3, 1, 1), (batch, 3, tile, tile), (batch, 3, edge, edge))

    @classmethod
    def parse(cls, text: str) -> Profile:
        """'1x3x64x64:4x3x512x512:8x3x1024x1024' (min:opt:max) -> Profile."""
        parts = text.split(":")
        try:
            shapes = [tuple(int(v) for v in part.lower().split("x")) for part in parts]
        except ValueError:
            shapes = []
        if len(parts) != 3 or any(len(s) != 4 for s in shapes):
            raise ValueError(
                f"profile {text!r}: expected min:opt:max, each NxCxHxW, e.g. 1x3x64x64:4x3x512x512:8x3x1024x1024"
            )
        return cls(*shapes)  # type: ignore[arg-type]  # lengths checked above

    @property
    def text(self) -> str:
        return ":".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and all(lo <= v <= hi for lo, v, hi in zip(self.min, shape, self.max))


@dataclass(frozen=True)
class BuildConfig:
    """How to build an engine; maps one to one onto `fastdenoise build-engine` options (precision is the ONNX's)."""

    profile: Profile = field(default_factory=Profile.for_tiles)
    workspace_mib: int | None = None  # builder scratch memory limit; None: TensorRT's default (the whole GPU)
    optimization_level: int = 3  # 0 (fast build) .. 5 (slow build, maybe faster engine)
    hardware_compatibility: str = "none"  # none, ampere_plus, same_compute_capability
    version_compatible: bool = False  # loadable by later TensorRT 10.x runtimes (needs host code allowed)
    timing_cache: str | None = None  # None: one file per GPU and TensorRT version in the cache folder

    def __post_init__(self) -> None:
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be positive, got {self.workspace_mib}")
        if not 0 <= self.optimization_level <= 5:
            raise ValueError(f"optimization_level must be 0..5, got {self.optimization_level}")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise ValueError(
                f"hardware_compatibility {self.hardware_compatibility!r}: choose one of {HARDWARE_COMPATIBILITY}"
            )


@dataclass(frozen=True)
class Target:
    """What an engine is bound to: the GPU model, its compute capability ("8.9") and the TensorRT version."""

    gpu: str
    compute_capability: str
    tensorrt: str


@dataclass(frozen=True)
class EngineInfo:
    """One cached engine as `--list` shows it; status is ok, corrupt, no sidecar or bad sidecar."""

    path: Path
    status: str
    meta: dict[str, Any]

    def describe(self) -> str:
        m = self.meta
        if not m:
            return f"{self.path.name}  [{self.status}]"
        size = self.path.stat().st_size / 2**20
        return (
            f"{self.path.name}  [{self.status}]  {m['gpu']} sm{m['compute_capability']}  TensorRT {m['tensorrt']}  "
            f"{m['precision']}  profile {m['profile']}  {m.get('kind', '?')} onnx {m['onnx_sha256'][:12]}  "
            f"{size:.1f} MiB"
        )


def current_target(device: torch.device | None = None) -> Target:
    """The Target of a CUDA device (default: the current one) with the installed TensorRT."""
    require_tensorrt()
    import tensorrt as trt

    if not torch.cuda.is_available():
        raise EngineError("TensorRT engines need a CUDA GPU and none is visible")
    index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return Target(torch.cuda.get_device_name(index), f"{major}.{minor}", trt.__version__)


def onnx_precision(path: Path) -> str:
    """fp32, fp16 or bf16: from fastdenoise's metadata, else from the ONNX file's floating-point initializers."""
    import onnx

    meta = onnx_metadata(path)
    if meta.get("precision") in PRECISIONS:
        return meta["precision"]
    types = {init.data_type for init in onnx.load(str(path), load_external_data=False).graph.initializer}
    return "bf16" if onnx.TensorProto.BFLOAT16 in types else "fp16" if onnx.TensorProto.FLOAT16 in types else "fp32"


def engine_key(target: Target, onnx_sha256: str, precision: str, cfg: BuildConfig) -> dict[str, Any]:
    """Everything an engine depends on; its digest names the cache file."""
    return {
        "gpu": target.gpu,
        "compute_capability": target.compute_capability,
        "tensorrt": target.tensorrt,
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "profile": cfg.profile.text,
        "workspace_mib": cfg.workspace_mib,
        "optimization_level": cfg.optimization_level,
        "hardware_compatibility": cfg.hardware_compatibility,
        "version_compatible": cfg.version_compatible,
    }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def engine_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cc = key["compute_capability"].replace(".", "")
    return Path(cache_dir) / f"{slug(key['gpu'])}_sm{cc}_trt{key['tensorrt']}_{key['precision']}_{digest}.engine"


def sidecar_path(engine: Path) -> Path:
    return Path(engine).with_suffix(".json")


def timing_cache_path(cache_dir: Path, target: Target) -> Path:
    """Timing caches are per GPU and TensorRT version; one file is shared by every build for that target."""
    cc = target.compute_capability.replace(".", "")
    return Path(cache_dir) / f"timing_{slug(target.gpu)}_sm{cc}_trt{target.tensorrt}.cache"


def build_engine(
    onnx_path: str | os.PathLike[str],
    cfg: BuildConfig | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: torch.device | None = None,
    rebuild: bool = False,
) -> Path:
    """Build (or find in the cache) the engine of an ONNX file for this GPU; returns the engine's path."""
    cfg = cfg or BuildConfig()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"{onnx_path}: no such ONNX file")
    target = current_target(device)
    try:
        precision = onnx_precision(onnx_path)
    except ImportError:
        raise
    except Exception as err:  # protobuf's DecodeError for a file that is not ONNX
        raise EngineError(f"{onnx_path}: not a readable ONNX file ({type(err).__name__}: {err})") from err
    key = engine_key(target, file_sha256(onnx_path), precision, cfg)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "engines"
    path = engine_path(cache, key)
    if path.is_file() and not rebuild:
        try:
            verify_engine(path, target)
            return path
        except EngineError:
            pass  # a corrupt or half-written entry: build it again below
    timing = Path(cfg.timing_cache) if cfg.timing_cache else timing_cache_path(cache, target)
    start = time.perf_counter()
    with torch.cuda.device(device if device is not None else torch.cuda.current_device()):
        plan, timing_blob = serialize_engine(onnx_path, cfg, timing)
    origin = {k: v for k, v in onnx_metadata(onnx_path).items() if k in ("kind", "weights_sha256")}
    extra = {"onnx": onnx_path.name, **origin, "build_seconds": round(time.perf_counter() - start, 1)}
    write_engine(path, plan, {**key, **extra})
    atomic_write(timing, lambda handle: handle.write(timing_blob))
    return path


def write_engine(path: Path, plan: bytes, meta: dict[str, Any]) -> None:
    """Write a serialized engine and then its sidecar (meta plus format, checksum and time), each atomically."""
    sidecar = {"format": FORMAT, **meta, "engine_sha256": hashlib.sha256(plan).hexdigest()}
    sidecar["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write(path, lambda handle: handle.write(plan))
    atomic_write(sidecar_path(path), lambda handle: handle.write(json.dumps(sidecar, indent=2).encode()))


def serialize_engine(onnx_path: Path, cfg: BuildConfig, timing_cache: Path) -> tuple[bytes, bytes]:
    """Parse the ONNX file into a strongly typed network and build it; returns (plan, updated timing cache)."""
    require_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: every tensor keeps the type the ONNX graph gives it (fp16/bf16 weights, Casts at the edges),
    # instead of the deprecated BuilderFlag.FP16/BF16 letting TensorRT pick precisions per layer.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    if network.num_inputs != 1:
        raise EngineError(f"{onnx_path}: expected one input, found {network.num_inputs}")

    config = builder.create_builder_config()
    if cfg.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.builder_optimization_level = cfg.optimization_level
    levels = {
        "none": trt.HardwareCompatibilityLevel.NONE,
        "ampere_plus": trt.HardwareCompatibilityLevel.AMPERE_PLUS,
        "same_compute_capability": trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
    }
    config.hardware_compatibility_level = levels[cfg.hardware_compatibility]
    if cfg.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)

    profile = builder.create_optimization_profile()
    p = cfg.profile
    profile.set_shape(network.get_input(0).name, trt.Dims(list(p.min)), trt.Dims(list(p.opt)), trt.Dims(list(p.max)))
    if config.add_optimization_profile(profile) < 0:
        raise EngineError(f"TensorRT rejected the optimization profile {p.text}")

    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    if not config.set_timing_cache(cache, False):  # a cache from another device or version: start a fresh one
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{onnx_path}: TensorRT failed to build an engine (its log above says why)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def read_sidecar(engine: Path) -> dict[str, Any]:
    """The sidecar of an engine file; EngineError if it is missing or not one of ours."""
    side = sidecar_path(engine)
    if not side.is_file():
        raise EngineError(
            f"{engine}: no sidecar {side.name}; engines are loaded only with the sidecar written by "
            "`fastdenoise build-engine` (it records the GPU, TensorRT version and checksum)"
        )
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise EngineError(f"{side}: unreadable sidecar ({err})") from err
    required = ("gpu", "compute_capability", "tensorrt", "engine_sha256", "precision", "profile")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in required):
        raise EngineError(f"{side}: not a {FORMAT} sidecar")
    return meta


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def check_compatible(meta: dict[str, Any], target: Target, name: str = "engine") -> None:
    """Raise EngineError unless an engine with this sidecar may run on target (GPU and TensorRT version)."""
    built, here = version_tuple(meta["tensorrt"]), version_tuple(target.tensorrt)
    if meta.get("version_compatible"):
        if built[:1] != here[:1] or here < built:
            raise EngineError(
                f"{name}: built with TensorRT {meta['tensorrt']} as version-compatible (runs on {built[0]}.x from "
                f"{meta['tensorrt']} on); this is TensorRT {target.tensorrt}: rebuild it here"
            )
    elif built != here:
        raise EngineError(
            f"{name}: built with TensorRT {meta['tensorrt']}, this is TensorRT {target.tensorrt}; engines load only in "
            "the version that built them: rebuild it here (or build with --version-compatible)"
        )
    cc_built, cc_here = version_tuple(meta["compute_capability"]), version_tuple(target.compute_capability)
    hardware = meta.get("hardware_compatibility", "none")
    built_for = f"{meta['gpu']} (sm{meta['compute_capability']})"
    here_is = f"{target.gpu} (sm{target.compute_capability})"
    if hardware == "ampere_plus":
        if cc_here < (8, 0):
            raise EngineError(f"{name}: built for Ampere and newer GPUs, this is {here_is}: rebuild it here")
    elif hardware == "same_compute_capability":
        if cc_here != cc_built:
            raise EngineError(f"{name}: built for compute capability {meta['compute_capability']}, this is {here_is}")
    elif (meta["gpu"], cc_built) != (target.gpu, cc_here):
        raise EngineError(
            f"{name}: built for {built_for}, this is {here_is}; rebuild it here "
            "(or build with --hardware-compatibility ampere_plus to share one engine across GPUs)"
        )


def verify_engine(path: str | os.PathLike[str], target: Target | None = None) -> dict[str, Any]:
    """Sidecar of an intact engine file (sha256 as recorded) that may run on target; EngineError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: no such engine file")
    meta = read_sidecar(path)
    digest = file_sha256(path)
    if digest != meta["engine_sha256"]:
        raise EngineError(
            f"{path}: corrupt engine (sha256 {digest[:12]}... differs from {meta['engine_sha256'][:12]}... in its "
            "sidecar); delete it and build again"
        )
    if target is not None:
        check_compatible(meta, target, str(path))
    return meta


def list_engines(cache_dir: str | os.PathLike[str] | None = None, *, verify: bool = True) -> list[EngineInfo]:
    """Every *.engine in cache_dir (default: the engine cache) with its sidecar and whether its checksum holds."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "engines"
    infos = []
    for path in sorted(cache.glob("*.engine")):
        try:
            meta = read_sidecar(path)
        except EngineError as err:
            infos.append(EngineInfo(path, "no sidecar" if "no sidecar" in str(err) else "bad sidecar", {}))
            continue
        ok = not verify or file_sha256(path) == meta["engine_sha256"]
        infos.append(EngineInfo(path, "ok" if ok else "corrupt", meta))
    return infos

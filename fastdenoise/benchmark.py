"""Benchmark profiles: inference throughput per backend, training steps, the machine's matmul peak, and quality and
accuracy on Kodak24 beside the peers, all in one run; the result is one JSON-able dict (see `fastdenoise.report`)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastdenoise.backends import Backend, BackendConfig, BackendKind, Precision, make_backend
from fastdenoise.checkpoint import bundled_weights, load_denoiser
from fastdenoise.datasets import require_data_root
from fastdenoise.devices import DTYPES, cpu_has_bf16, resolve_amp, resolve_device
from fastdenoise.evaluate import Denoise, EvalResult, backend_denoiser, evaluate
from fastdenoise.files import sha256_file
from fastdenoise.images import list_images
from fastdenoise.machine import machine_facts, machine_name
from fastdenoise.model import Denoiser, DenoiserSpec, macs_per_pixel
from fastdenoise.peers import LABELS, MACS_PER_PIXEL, PeerKind, make_peer, timed
from fastdenoise.train import mse_loss

GFLOP_PER_MP = 2 * macs_per_pixel() / 1e3  # 441 GFLOP per megapixel for the default network
# Shipped with the package (package data), so an installed copy finds them too; `--baselines` points elsewhere.
DEFAULT_BASELINES = Path(str(resources.files("fastdenoise").joinpath("baselines.json")))
SCHEMA = 1

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------- profiles


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


@dataclass(frozen=True)
class BenchProfile:
    """What one `fastdenoise bench --profile NAME` run measures."""

    name: str
    device: str = "cpu"
    backends: tuple[str, ...] = ("eager",)
    precisions: tuple[str, ...] = ("fp32",)
    batches: tuple[int, ...] = (1,)
    sizes: tuple[tuple[int, int], ...] = ((256, 256),)
    rounds: int = 3  # timed rounds per case (median reported), after one untimed warm-up/compile call
    train_modes: tuple[TrainMode, ...] = (TrainMode(),)
    train_batch: int = 8
    train_patch: int = 64
    train_rounds: int = 3
    quality_images: int | None = 4  # first N Kodak24 images (None: all 24)
    quality_sigma: float = 25.0
    seed: int = 0
    ours: tuple[str, ...] = ("fp32",)  # precisions of our eager backend in the quality table
    peers: tuple[str, ...] = ("cdncnn-b", "ffdnet")
    cbm3d_images: int = 0  # CBM3D on the first N images only (~17 s per 512x512 image on 2 cores; cached)
    accuracy: tuple[str, ...] = ("kodak24-first4-sigma25",)  # keys of fastdenoise/baselines.json
    matmul_size: int = 2048

    def __post_init__(self) -> None:
        for kind in self.backends:
            BackendKind(kind)
        for peer in self.peers:
            PeerKind(peer)
        for precision in (*self.precisions, *self.ours):
            if precision not in DTYPES:
                raise ValueError(f"precision must be one of {list(DTYPES)}, got {precision!r}")
        if self.rounds < 1 or self.train_rounds < 1:
            raise ValueError("rounds and train_rounds must be >= 1")

    def throughput_cases(self) -> list[ThroughputCase]:
        return [
            ThroughputCase(kind, precision, batch, h, w)
            for kind in self.backends
            for precision in self.precisions
            for h, w in self.sizes
            for batch in self.batches
        ]


PROFILES = {
    # CI-sized CPU run: a few minutes on 2 cores.
    "quick": BenchProfile(
        "quick", device="cpu", backends=("eager", "compiled", "onnxruntime", "openvino", "triton"), precisions=("fp32", "bf16"),
        batches=(1, 4), sizes=((256, 256),), rounds=3, train_modes=(TrainMode(),), train_batch=4, train_patch=64, train_rounds=2,
        quality_images=2, ours=("fp32", "bf16"), peers=("cdncnn-b", "ffdnet", "cbm3d"), cbm3d_images=1,
        accuracy=("kodak24-first4-sigma25",), matmul_size=2048,
    ),
    "full": BenchProfile(
        "full", device="cpu", backends=("eager", "compiled", "onnxruntime", "openvino", "triton"), precisions=("fp32", "bf16"),
        batches=(1, 4), sizes=((256, 256), (512, 512), (1024, 1024)), rounds=5,
        train_modes=(TrainMode(), TrainMode(compile=True, amp="bf16")), train_batch=16, train_patch=64,
        quality_images=None, ours=("fp32", "bf16"), peers=("cdncnn-b", "cdncnn-25", "ffdnet", "cbm3d"), cbm3d_images=4,
        accuracy=("kodak24-first4-sigma25", "kodak24-sigma25", "kodak24-sigma50", "cdncnn-b-kodak24-sigma25",
                  "cdncnn-25-kodak24-sigma25", "ffdnet-kodak24-sigma25"),
        matmul_size=4096,
    ),
    "gpu": BenchProfile(
        "gpu", device="cuda", backends=tuple(k.value for k in BackendKind), precisions=("fp32", "bf16", "fp16"),
        batches=(1, 8), sizes=((512, 512), (1024, 1024), (2048, 2048)), rounds=20,
        train_modes=(TrainMode(), TrainMode(compile=True, amp="bf16")), train_batch=32, train_patch=96, train_rounds=10,
        quality_images=None, ours=("fp32", "bf16"), peers=("cdncnn-b", "cdncnn-25", "ffdnet", "cbm3d"), cbm3d_images=2,
        accuracy=("kodak24-first4-sigma25", "kodak24-sigma25", "kodak24-sigma50", "cdncnn-b-kodak24-sigma25",
                  "cdncnn-25-kodak24-sigma25", "ffdnet-kodak24-sigma25"),
        matmul_size=8192,
    ),
}  # fmt: skip


def get_profile(name: str) -> BenchProfile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


# ------------------------------------------------------------------------------------------------------------ timing


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
    """GFLOP/s of the fastest of `rounds` n x n x n matmuls per precision: the machine's practical compute roof."""
    peak = {}
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(0)
    for name in dict.fromkeys(("fp32", *precisions)):
        if device.type == "cpu" and name == "fp16":
            continue  # no native fp16 matmul on CPUs
        a = torch.randn(n, n, generator=generator).to(device, DTYPES[name])
        b = torch.randn(n, n, generator=generator).to(device, DTYPES[name])
        torch.mm(a, b)
        seconds = min(time_rounds(partial(torch.mm, a, b), rounds, sync))
        peak[name] = 2 * n**3 / seconds / 1e9
    return peak


# -------------------------------------------------------------------------------------------------------- throughput


def backend_unavailable(kind: str, precision: str, device: torch.device) -> str | None:
    """Why this backend/precision cannot be benchmarked here, or None."""
    kind = BackendKind(kind)
    if device.type == "cpu" and precision == "fp16":
        return "fp16 on CPU is emulated"
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
        if precision == "bf16":
            return "onnxruntime has no bfloat16 convolutions"
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
        "name": name, **extra, "batch": batch, "height": height, "width": width, "rounds": len(seconds),
        "seconds_median": median, "seconds_min": min(seconds),
        "mp_per_s": megapixels / median, "images_per_s": batch / median, "gflops": megapixels * gflop / median,
    }  # fmt: skip


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
        rows.append(throughput_row(case.name, seconds, case.batch, case.height, case.width, gflop_per_mp(model),
                                   backend=case.backend, precision=case.precision))  # fmt: skip
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


# ---------------------------------------------------------------------------------------------------------- training


def train_step(model: nn.Module, mode: TrainMode, noisy: torch.Tensor, clean: torch.Tensor) -> Callable[[], float]:
    """One optimizer step of separate (MSE) training as `fastdenoise.train.fit` runs it; returns the loss."""
    from fastdenoise.data import Batch

    device = noisy.device
    model.to(device).train().to(memory_format=torch.channels_last)
    batch = Batch(noisy.contiguous(memory_format=torch.channels_last), clean)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if mode.compile else model
    amp = resolve_amp(mode.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def step() -> float:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = mse_loss(forward, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item()

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


# ------------------------------------------------------------------------------------------------ data and baselines


class DataIntegrityError(ValueError):
    """A benchmark data file missing from, or differing from, ../shared/data/SHA256SUMS."""


def read_sums(data_root: Path) -> dict[str, str]:
    """SHA256SUMS as {relative path without './': hex digest}."""
    path = Path(data_root) / "SHA256SUMS"
    if not path.is_file():
        raise DataIntegrityError(f"{path}: no such file; cannot verify the benchmark data")
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*").removeprefix("./")] = digest
    return sums


def verify_files(data_root: Path, paths: list[Path]) -> None:
    """Raise DataIntegrityError unless every file's SHA-256 matches its SHA256SUMS line."""
    data_root = Path(data_root)
    sums = read_sums(data_root)
    bad = []
    for path in paths:
        name = Path(path).resolve().relative_to(data_root.resolve()).as_posix()
        if name not in sums:
            bad.append(f"{name} (not listed)")
        elif sha256_file(path) != sums[name]:
            bad.append(f"{name} (checksum differs)")
    if bad:
        raise DataIntegrityError(
            f"{data_root}: benchmark data does not match SHA256SUMS: {', '.join(bad[:5])}"
            + (" ..." if len(bad) > 5 else "")
        )


def data_images(data_root: Path, folder: str, limit: int | None) -> list[Path]:
    """The first `limit` images of data_root/folder (sorted, as `evaluate` numbers them), checked against SHA256SUMS."""
    paths = list_images(Path(data_root) / folder)[:limit]
    if not paths:
        raise FileNotFoundError(f"{Path(data_root) / folder}: no images found")
    if limit is not None and len(paths) < limit:
        raise DataIntegrityError(f"{Path(data_root) / folder}: {len(paths)} images, expected at least {limit}")
    verify_files(data_root, paths)
    return paths


@dataclass(frozen=True)
class AccuracyCheck:
    """One entry of fastdenoise/baselines.json: mean PSNR of `method` on data[:limit] at sigma/seed, fp32 eager."""

    key: str
    method: str = "bundled"  # "bundled" (the shipped weights, or --weights) or a peer (fastdenoise.peers.PeerKind)
    data: str = "kodak24"
    limit: int | None = None
    sigma: float = 25.0
    seed: int = 0
    tolerance_db: float = 0.05
    psnr: float | None = None  # None: not recorded yet, the check skips
    weights_sha256: str | None = None
    source: str = ""
    recorded: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method != "bundled":
            PeerKind(self.method)
        if self.tolerance_db < 0:
            raise ValueError(f"{self.key}: tolerance_db must be >= 0")

    @property
    def subset(self) -> str:
        return f"{self.data}[:{self.limit}]" if self.limit else self.data


@dataclass(frozen=True)
class AccuracyOutcome:
    key: str
    method: str
    psnr: float | None
    baseline: float | None
    tolerance_db: float
    status: str  # pass | fail | no-baseline | error
    message: str


def load_baselines(path: Path = DEFAULT_BASELINES) -> dict[str, AccuracyCheck]:
    """The accuracy checks of a baselines file, by key."""
    try:
        payload = json.loads(Path(path).read_text())
        return {key: AccuracyCheck(key=key, **entry) for key, entry in payload["checks"].items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a baselines file ({type(err).__name__}: {err})") from err


def judge(check: AccuracyCheck, psnr: float, weights_sha256: str | None = None) -> AccuracyOutcome:
    """Pass unless psnr < baseline - tolerance; no-baseline when none is recorded."""
    what = f"{check.key}: {check.method} on {check.subset}, sigma {check.sigma:g}, seed {check.seed}"
    if check.psnr is None:
        return AccuracyOutcome(check.key, check.method, psnr, None, check.tolerance_db, "no-baseline",
                               f"{what}: {psnr:.3f} dB; no baseline recorded (python bench/record_baselines.py)")  # fmt: skip
    delta = psnr - check.psnr
    status = "fail" if delta < -check.tolerance_db else "pass"
    message = (
        f"{what}: {psnr:.3f} dB vs baseline {check.psnr:.3f} dB ({delta:+.3f} dB, tolerance {check.tolerance_db:g} dB)"
    )
    if status == "fail" and check.weights_sha256 and weights_sha256 and check.weights_sha256 != weights_sha256:
        message += (
            f"; baseline recorded with weights sha256 {check.weights_sha256[:12]}, these are {weights_sha256[:12]}"
        )
    return AccuracyOutcome(check.key, check.method, psnr, check.psnr, check.tolerance_db, status, message)


def record_baselines(path: Path, psnrs: dict[str, float], weights_sha256: str | None, facts: dict) -> None:
    """Write measured PSNRs into the baselines file (other entries and fields kept), rounded to 0.001 dB."""
    payload = json.loads(Path(path).read_text())
    stamp = {"date": datetime.now(timezone.utc).date().isoformat(), "machine": machine_name(facts), "commit": facts.get("commit"),
             "torch": facts["versions"].get("torch")}  # fmt: skip
    for key, value in psnrs.items():
        entry = payload["checks"][key]
        entry["psnr"] = round(value, 3)
        entry["recorded"] = stamp
        if entry.get("method", "bundled") == "bundled":
            entry["weights_sha256"] = weights_sha256
            entry["source"] = "bench/record_baselines.py"
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------- quality and accuracy


class Scorer:
    """Mean PSNR and MP/s of denoisers on data[:limit], each (method, precision, data, limit, sigma, seed) scored once."""

    def __init__(
        self, data_root: Path, model: Denoiser, device: torch.device, cache_dir: Path | None = None, log: Log = print
    ) -> None:
        self.data_root, self.model, self.device = Path(data_root), model, device
        self.cache_dir, self.log = cache_dir, log
        self.done: dict[tuple, dict] = {}

    def denoiser(self, method: str, precision: str) -> tuple[str, Denoise]:
        """(label, Denoise) of 'bundled' (our eager backend), 'naive' or a peer."""
        if method == "bundled":
            backend = make_backend(
                self.model, BackendConfig(kind="eager", device=str(self.device), precision=precision)
            )
            return f"fastdenoise eager {precision}", backend_denoiser(backend)
        if method == "naive":
            run = naive_loop(self.model, self.device)

            def naive(noisy: np.ndarray, sigma: float) -> np.ndarray:
                x = torch.from_numpy(noisy).permute(2, 0, 1)[None].to(self.device)
                return run(x)[0].permute(1, 2, 0).cpu().numpy()

            return "naive loop fp32", naive
        kind = PeerKind(method)
        device = self.device if kind != PeerKind.cbm3d else torch.device("cpu")
        return LABELS[kind], make_peer(kind, self.data_root, device, self.cache_dir)

    def score(
        self, method: str, data: str, limit: int | None, sigma: float, seed: int, precision: str = "fp32"
    ) -> dict:
        key = (method, precision, data, limit, sigma, seed)
        if key in self.done:
            return self.done[key]
        paths = data_images(self.data_root, data, limit)
        label, denoise = self.denoiser(method, precision)
        if method != PeerKind.cbm3d.value:  # threads, allocator, weight layouts: not part of the per-image speed
            denoise(np.random.default_rng(0).random((64, 64, 3), dtype=np.float32), sigma)
        denoise, spent = timed(denoise)
        self.log(f"quality {label} on {data} ({len(paths)} images, sigma {sigma:g})")
        result: EvalResult = evaluate(
            denoise, self.data_root / data, [sigma], seed, label, with_ssim=False, limit=len(paths)
        )
        seconds, megapixels = spent()
        macs = (
            macs_per_pixel(self.model.spec) if method in ("bundled", "naive") else MACS_PER_PIXEL.get(PeerKind(method))
        )
        self.done[key] = {
            "method": label, "key": method, "precision": precision, "data": data, "images": len(paths), "sigma": sigma, "seed": seed,
            "psnr": result.mean(sigma), "seconds": seconds, "mp_per_s": megapixels / seconds if seconds else math.nan,
            "gflop_per_mp": 2 * macs / 1e3 if macs else None,
        }  # fmt: skip
        return self.done[key]


def measure_quality(scorer: Scorer, profile: BenchProfile) -> list[dict]:
    """Ours (per precision), the naive loop and the peers on the same Kodak24 images; CBM3D on its own subset."""
    sigma, seed, limit = profile.quality_sigma, profile.seed, profile.quality_images
    rows = [scorer.score("bundled", "kodak24", limit, sigma, seed, precision) for precision in profile.ours
            if backend_unavailable("eager", precision, scorer.device) is None]  # fmt: skip
    rows.append(scorer.score("naive", "kodak24", limit, sigma, seed))
    for peer in profile.peers:
        if PeerKind(peer) == PeerKind.cbm3d:
            if profile.cbm3d_images > 0:
                rows.append(scorer.score(peer, "kodak24", min(profile.cbm3d_images, limit or 24), sigma, seed))
            continue
        rows.append(scorer.score(peer, "kodak24", limit, sigma, seed))
    return rows


def weights_digest(weights: Path | None) -> str:
    return sha256_file(Path(weights) if weights is not None else bundled_weights())


def run_accuracy(scorer: Scorer, checks: list[AccuracyCheck], weights_sha256: str | None) -> list[AccuracyOutcome]:
    """Score and judge each check; missing data or weights become 'error' outcomes (raised by the pytest wrappers)."""
    outcomes = []
    for check in checks:
        try:
            row = scorer.score(check.method, check.data, check.limit, check.sigma, check.seed)
        except (FileNotFoundError, ValueError, ImportError) as err:  # DataIntegrityError is a ValueError
            outcomes.append(
                AccuracyOutcome(check.key, check.method, None, check.psnr, check.tolerance_db, "error", str(err))
            )
            continue
        outcomes.append(judge(check, row["psnr"], weights_sha256 if check.method == "bundled" else None))
    return outcomes


# --------------------------------------------------------------------------------------------------------------- run

SECTIONS = ("peak", "throughput", "training", "quality", "accuracy")


@dataclass(frozen=True)
class BenchConfig:
    """One `fastdenoise bench` run; maps one to one onto its options."""

    profile: str = "quick"
    data: str | None = None  # the shared data folder; None: $FASTDENOISE_DATA or ../shared/data
    weights: str | None = None  # None: the bundled weights
    baselines: str | None = None  # None: the baselines shipped with the package (DEFAULT_BASELINES)
    sections: tuple[str, ...] = SECTIONS
    cache: str | None = None  # CBM3D output cache; None: ~/.cache/fastdenoise/cbm3d

    def __post_init__(self) -> None:
        get_profile(self.profile)
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            raise ValueError(f"sections must be among {', '.join(SECTIONS)}; got {', '.join(self.sections) or 'none'}")


def run_benchmark(cfg: BenchConfig, log: Log = print, profile: BenchProfile | None = None) -> dict:
    """Run the configured profile's sections and return the result (schema in fastdenoise/report.py)."""
    profile = profile or get_profile(cfg.profile)
    device = resolve_device(profile.device)
    data_root = Path(cfg.data) if cfg.data else require_data_root()
    start = time.perf_counter()
    facts = machine_facts()
    model = load_denoiser(Path(cfg.weights) if cfg.weights else None)
    weights_sha = weights_digest(Path(cfg.weights) if cfg.weights else None)
    result: dict = {
        "schema": SCHEMA, "profile": profile.name, "config": asdict(profile), "sections": list(cfg.sections),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": facts, "machine_name": machine_name(facts),
        "device": str(device), "weights": {"path": cfg.weights or "bundled", "sha256": weights_sha}, "data": str(data_root),
        "gflop_per_mp": gflop_per_mp(model), "peak": {}, "throughput": [], "training": [], "skipped": [], "quality": [], "accuracy": [],
    }  # fmt: skip
    if "peak" in cfg.sections:
        log(f"matmul peak {profile.matmul_size}^3")
        result["peak"] = measure_peak(device, profile.precisions, profile.matmul_size)
    if "throughput" in cfg.sections:
        result["throughput"] = measure_naive(model, profile.sizes, device, profile.rounds, log)
        rows, skipped = measure_throughput(model, profile.throughput_cases(), device, profile.rounds, log)
        result["throughput"] += rows
        result["skipped"] += skipped
        if "peak" in cfg.sections:  # again after the grid, keeping the best: one sample can be hit by other load
            again = measure_peak(device, profile.precisions, profile.matmul_size)
            result["peak"] = {k: max(v, again.get(k, 0.0)) for k, v in result["peak"].items()}
    if "training" in cfg.sections:
        rows, skipped = measure_training(
            profile.train_modes, profile.train_batch, profile.train_patch, device, profile.train_rounds, log, model.spec
        )
        result["training"], result["skipped"] = rows, result["skipped"] + skipped
    scorer = Scorer(data_root, model, device, Path(cfg.cache) if cfg.cache else None, log)
    if "quality" in cfg.sections:
        result["quality"] = measure_quality(scorer, profile)
    if "accuracy" in cfg.sections:
        baselines = load_baselines(Path(cfg.baselines) if cfg.baselines else DEFAULT_BASELINES)
        missing = [k for k in profile.accuracy if k not in baselines]
        if missing:
            raise ValueError(f"profile {profile.name}: no such baselines entries: {', '.join(missing)}")
        outcomes = run_accuracy(scorer, [baselines[k] for k in profile.accuracy], weights_sha)
        result["accuracy"] = [asdict(o) for o in outcomes]
    result["seconds"] = time.perf_counter() - start
    return result

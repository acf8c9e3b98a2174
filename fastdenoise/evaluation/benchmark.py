"""Benchmark profiles and the run behind `fastdenoise bench`: the matmul peak, inference throughput per backend,
training steps (`evaluation.throughput`), and quality and accuracy on Kodak24 beside the peers
(`evaluation.accuracy`), all in one run; the result is one JSON-able dict (see `evaluation.report`)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from fastdenoise.backends import BackendKind
from fastdenoise.datasets import DATA_ENV, data_root
from fastdenoise.devices import DTYPES, resolve_device
from fastdenoise.evaluation.accuracy import DEFAULT_BASELINES, Scorer, load_baselines, run_accuracy, weights_digest
from fastdenoise.evaluation.demo import sample_photos
from fastdenoise.evaluation.peers import PeerKind
from fastdenoise.evaluation.throughput import (
    Log,
    ThroughputCase,
    TrainMode,
    backend_unavailable,
    gflop_per_mp,
    measure_naive,
    measure_peak,
    measure_throughput,
    measure_training,
    tf32_convolutions,
)
from fastdenoise.files import sha256_file
from fastdenoise.images import save_rgb
from fastdenoise.machine import machine_facts, machine_name
from fastdenoise.models.checkpoint import load_denoiser

SCHEMA = 1
SAMPLES = "samples"  # the quality section's data where no shared data folder is installed: the demo's photos


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


# The full-Kodak24 checks of the full and gpu profiles (the per-sigma models' skip while those are not bundled).
FULL_ACCURACY = (
    "kodak24-first4-sigma25",
    "kodak24-sigma25",
    "kodak24-sigma50",
    "cdncnn-b-kodak24-sigma25",
    "cdncnn-25-kodak24-sigma25",
    "ffdnet-kodak24-sigma25",
    *(f"sigma{n}-kodak24-sigma{n}" for n in (15, 25, 35, 50)),
)

PROFILES = {
    # CI-sized CPU run: a few minutes on 2 cores.
    "quick": BenchProfile(
        "quick",
        device="cpu",
        backends=("eager", "compiled", "onnxruntime", "openvino", "triton"),
        precisions=("fp32", "bf16"),
        batches=(1, 4),
        sizes=((256, 256),),
        rounds=3,
        train_modes=(TrainMode(),),
        train_batch=4,
        train_patch=64,
        train_rounds=2,
        quality_images=2,
        ours=("fp32", "bf16"),
        peers=("cdncnn-b", "ffdnet", "cbm3d"),
        cbm3d_images=1,
        accuracy=("kodak24-first4-sigma25",),
        matmul_size=2048,
    ),
    "full": BenchProfile(
        "full",
        device="cpu",
        backends=("eager", "compiled", "onnxruntime", "openvino", "triton"),
        precisions=("fp32", "bf16"),
        batches=(1, 4),
        sizes=((256, 256), (512, 512), (1024, 1024)),
        rounds=5,
        train_modes=(TrainMode(), TrainMode(compile=True, amp="bf16")),
        train_batch=16,
        train_patch=64,
        quality_images=None,
        ours=("fp32", "bf16"),
        peers=("cdncnn-b", "cdncnn-25", "ffdnet", "cbm3d"),
        cbm3d_images=4,
        accuracy=FULL_ACCURACY,
        matmul_size=4096,
    ),
    "gpu": BenchProfile(
        "gpu",
        device="cuda",
        backends=tuple(k.value for k in BackendKind),
        precisions=("fp32", "bf16", "fp16"),
        batches=(1, 8),
        sizes=((512, 512), (1024, 1024), (2048, 2048)),
        rounds=20,
        train_modes=(TrainMode(), TrainMode(compile=True, amp="bf16")),
        train_batch=32,
        train_patch=96,
        train_rounds=10,
        quality_images=None,
        ours=("fp32", "bf16"),
        peers=("cdncnn-b", "cdncnn-25", "ffdnet", "cbm3d"),
        cbm3d_images=2,
        accuracy=FULL_ACCURACY,
        matmul_size=8192,
    ),
}


def get_profile(name: str) -> BenchProfile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def measure_quality(scorer: Scorer, profile: BenchProfile, data: str = "kodak24") -> list[dict]:
    """Ours (per precision), the naive loop and the peers on the same images of `data`; CBM3D on its own subset."""
    sigma, seed, limit = profile.quality_sigma, profile.seed, profile.quality_images
    rows = [
        scorer.score("bundled", data, limit, sigma, seed, precision)
        for precision in profile.ours
        if backend_unavailable("eager", precision, scorer.device) is None
    ]
    rows.append(scorer.score("naive", data, limit, sigma, seed))
    for peer in profile.peers:
        if PeerKind(peer) == PeerKind.cbm3d:
            if profile.cbm3d_images > 0:
                rows.append(scorer.score(peer, data, min(profile.cbm3d_images, limit or 24), sigma, seed))
            continue
        rows.append(scorer.score(peer, data, limit, sigma, seed))
    return rows


def write_sample_data(folder: Path) -> Path:
    """A data folder of the demo's sample photos (shipped inside scikit-image): samples/*.png and the SHA256SUMS
    that the scorer checks; `bench` measures quality on it where no shared data folder is installed."""
    for name, image in sample_photos().items():
        save_rgb(image, folder / SAMPLES / f"{name}.png")
    paths = sorted((folder / SAMPLES).glob("*.png"))
    sums = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in paths]
    (folder / "SHA256SUMS").write_text("".join(sums))
    return folder


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
    """Run the configured profile's sections and return the result (schema in fastdenoise/evaluation/report.py).
    Without a shared data folder (none given, none found) quality runs on the demo's sample photos without peers,
    and the accuracy checks (their baselines are Kodak24's) are skipped; the result says so."""
    profile = profile or get_profile(cfg.profile)
    shared = Path(cfg.data) if cfg.data else data_root()
    if shared is None and cfg.sections == ("accuracy",):
        raise FileNotFoundError(f"the accuracy checks need the shared data folder (Kodak24): set {DATA_ENV} or --data")
    with tempfile.TemporaryDirectory(prefix="fastdenoise-bench-") as scratch:
        if shared is None:
            log(f"no shared data folder ({DATA_ENV} unset, none here or above): quality on the demo's sample photos")
            profile = replace(profile, peers=(), cbm3d_images=0)
        return measure_sections(cfg, profile, shared or write_sample_data(Path(scratch)), shared is not None, log)


def measure_sections(cfg: BenchConfig, profile: BenchProfile, root: Path, shared: bool, log: Log) -> dict:
    """The sections of one run; `root` is the shared data folder, or (shared False) the sample photos' folder."""
    device = resolve_device(profile.device)
    start = time.perf_counter()
    facts = machine_facts()
    model = load_denoiser(Path(cfg.weights) if cfg.weights else None)
    weights_sha = weights_digest(Path(cfg.weights) if cfg.weights else None)
    result: dict = {
        "schema": SCHEMA,
        "profile": profile.name,
        "config": asdict(profile),
        "sections": list(cfg.sections),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": facts,
        "machine_name": machine_name(facts),
        "device": str(device),
        "weights": {"path": cfg.weights or "bundled", "sha256": weights_sha},
        "data": str(root) if shared else f"{SAMPLES}: the demo's sample photos (no shared data folder)",
        "gflop_per_mp": gflop_per_mp(model),
        "peak": {},
        "throughput": [],
        "training": [],
        "skipped": [],
        "quality": [],
        "accuracy": [],
    }
    if "peak" in cfg.sections:
        log(f"matmul peak {profile.matmul_size}^3")
        result["peak"] = measure_peak(device, profile.precisions, profile.matmul_size)
        result["tf32"] = tf32_convolutions(device)  # fp32 convolutions and the fp32 roof in TF32
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
    scorer = Scorer(root, model, device, Path(cfg.cache) if cfg.cache else None, log)
    if "quality" in cfg.sections:
        result["quality"] = measure_quality(scorer, profile, "kodak24" if shared else SAMPLES)
    if "accuracy" in cfg.sections and not shared:
        result["skipped"].append({"name": "accuracy checks", "reason": "no shared data folder (Kodak24)"})
    elif "accuracy" in cfg.sections:
        baselines = load_baselines(Path(cfg.baselines) if cfg.baselines else DEFAULT_BASELINES)
        missing = [k for k in profile.accuracy if k not in baselines]
        if missing:
            raise ValueError(f"profile {profile.name}: no such baselines entries: {', '.join(missing)}")
        outcomes = run_accuracy(scorer, [baselines[k] for k in profile.accuracy], weights_sha)
        result["accuracy"] = [asdict(o) for o in outcomes]
    result["seconds"] = time.perf_counter() - start
    return result

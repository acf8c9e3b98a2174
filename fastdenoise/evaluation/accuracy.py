"""Quality and accuracy checks of the benchmark: the shared data verified against SHA256SUMS, PSNR of our model and
the peers on Kodak24, and the baselines (package data) each check is judged against."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.evaluation.evaluate import Denoise, EvalResult, backend_denoiser, evaluate
from fastdenoise.evaluation.peers import LABELS, MACS_PER_PIXEL, PeerKind, make_peer, timed
from fastdenoise.evaluation.throughput import Log, naive_loop
from fastdenoise.files import sha256_file
from fastdenoise.images import list_images
from fastdenoise.machine import machine_name
from fastdenoise.models.checkpoint import bundled_weights, load_denoiser
from fastdenoise.models.denoiser import Denoiser, macs_per_pixel
from fastdenoise.models.zoo import weights_in
from fastdenoise.words import plural

# Shipped with the package (package data), so an installed copy finds them too; `--baselines` points elsewhere.
DEFAULT_BASELINES = Path(str(resources.files("fastdenoise").joinpath("baselines.json")))


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
        found = plural(len(paths), "image")
        raise DataIntegrityError(f"{Path(data_root) / folder}: {found}, expected at least {limit}")
    verify_files(data_root, paths)
    return paths


@dataclass(frozen=True)
class AccuracyCheck:
    """One entry of fastdenoise/baselines.json: mean PSNR of `method` on data[:limit] at sigma/seed, fp32 eager."""

    key: str
    method: str = "bundled"  # "bundled" (the shipped weights, or --weights) or a peer (evaluation.peers.PeerKind)
    model: str | None = None  # "bundled" only: the bundled weights by name (sigma25, ...); None: blind or --weights
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
            if self.model is not None:
                raise ValueError(f"{self.key}: model {self.model!r} is for method 'bundled' only, not {self.method!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError(f"{self.key}: model must name bundled weights (sigma25, ...), got {self.model!r}")
        if self.tolerance_db < 0:
            raise ValueError(f"{self.key}: tolerance_db must be >= 0")

    @property
    def subset(self) -> str:
        return f"{self.data}[:{self.limit}]" if self.limit else self.data

    @property
    def label(self) -> str:
        return f"{self.method} {self.model}" if self.model else self.method


@dataclass(frozen=True)
class AccuracyOutcome:
    key: str
    method: str
    psnr: float | None
    baseline: float | None
    tolerance_db: float
    status: str  # pass | fail | no-baseline | error
    message: str
    model: str | None = None  # the bundled weights by name; None: blind or --weights (method "bundled")
    weights_sha256: str | None = None  # of the weights file the check ran ("bundled" only)


def load_baselines(path: Path = DEFAULT_BASELINES) -> dict[str, AccuracyCheck]:
    """The accuracy checks of a baselines file, by key."""
    try:
        payload = json.loads(Path(path).read_text())
        return {key: AccuracyCheck(key=key, **entry) for key, entry in payload["checks"].items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a baselines file ({type(err).__name__}: {err})") from err


def judge(check: AccuracyCheck, psnr: float, weights_sha256: str | None = None) -> AccuracyOutcome:
    """Pass unless psnr < baseline - tolerance; no-baseline when none is recorded."""
    what = f"{check.key}: {check.label} on {check.subset}, sigma {check.sigma:g}, seed {check.seed}"
    ran = {"model": check.model, "weights_sha256": weights_sha256}
    if check.psnr is None:
        return AccuracyOutcome(
            check.key,
            check.method,
            psnr,
            None,
            check.tolerance_db,
            "no-baseline",
            f"{what}: {psnr:.3f} dB; no baseline recorded (python bench/record_baselines.py)",
            **ran,
        )
    delta = psnr - check.psnr
    status = "fail" if delta < -check.tolerance_db else "pass"
    message = (
        f"{what}: {psnr:.3f} dB vs baseline {check.psnr:.3f} dB ({delta:+.3f} dB, tolerance {check.tolerance_db:g} dB)"
    )
    if status == "fail" and check.weights_sha256 and weights_sha256 and check.weights_sha256 != weights_sha256:
        message += (
            f"; baseline recorded with weights sha256 {check.weights_sha256[:12]}, these are {weights_sha256[:12]}"
        )
    return AccuracyOutcome(check.key, check.method, psnr, check.psnr, check.tolerance_db, status, message, **ran)


def record_baselines(path: Path, psnrs: dict[str, float], weights_sha256: dict[str, str | None], facts: dict) -> None:
    """Write measured PSNRs into the baselines file (other entries and fields kept), rounded to 0.001 dB; each bundled
    entry with the SHA-256 of the weights it was measured with (weights_sha256, by key)."""
    payload = json.loads(Path(path).read_text())
    stamp = {
        "date": datetime.now(timezone.utc).date().isoformat(),
        "machine": machine_name(facts),
        "commit": facts.get("commit"),
        "torch": facts["versions"].get("torch"),
    }
    for key, value in psnrs.items():
        entry = payload["checks"][key]
        entry["psnr"] = round(value, 3)
        entry["recorded"] = stamp
        if entry.get("method", "bundled") == "bundled":
            entry["weights_sha256"] = weights_sha256[key]
            entry["source"] = "bench/record_baselines.py"
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


class ModelNotBundled(ValueError):
    """A check names bundled weights that the weights folder does not hold."""


class Scorer:
    """Mean PSNR and MP/s of denoisers on data[:limit], each (method, model, precision, data, limit, sigma, seed)
    scored once. `model` runs "bundled" (blind or --weights); a check's named model is read from weights_folder."""

    def __init__(
        self,
        data_root: Path,
        model: Denoiser,
        device: torch.device,
        cache_dir: Path | None = None,
        log: Log = print,
        weights_folder: Path | None = None,
    ) -> None:
        self.data_root, self.model, self.device = Path(data_root), model, device
        self.cache_dir, self.log = cache_dir, log
        self.weights_folder = Path(weights_folder) if weights_folder is not None else bundled_weights().parent
        self.done: dict[tuple, dict] = {}
        self.named: dict[str, tuple[Denoiser, str]] = {}

    def bundled(self, name: str) -> tuple[Denoiser, str]:
        """The bundled weights `name` of weights_folder and their SHA-256, loaded once."""
        if name not in self.named:
            names = weights_in(self.weights_folder)
            if name not in names:
                raise ModelNotBundled(
                    f"model {name!r} is not bundled in {self.weights_folder} (bundled: {', '.join(names) or 'none'})"
                )
            path = self.weights_folder / f"{name}.safetensors"
            self.named[name] = load_denoiser(path), sha256_file(path)
        return self.named[name]

    def denoiser(self, method: str, precision: str, model: str | None = None) -> tuple[str, Denoise]:
        """(label, Denoise) of 'bundled' (our eager backend; the named bundled weights if `model`), 'naive' or a
        peer."""
        if model is not None and method != "bundled":
            raise ValueError(f"model {model!r} is for method 'bundled' only, not {method!r}")
        if method == "bundled":
            net = self.bundled(model)[0] if model is not None else self.model
            backend = make_backend(net, BackendConfig(kind="eager", device=str(self.device), precision=precision))
            return f"fastdenoise {model + ' ' if model else ''}eager {precision}", backend_denoiser(backend)
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
        self,
        method: str,
        data: str,
        limit: int | None,
        sigma: float,
        seed: int,
        precision: str = "fp32",
        model: str | None = None,
    ) -> dict:
        key = (method, model, precision, data, limit, sigma, seed)
        if key in self.done:
            return self.done[key]
        net = self.bundled(model)[0] if model is not None else self.model  # a model not bundled: before the data
        paths = data_images(self.data_root, data, limit)
        label, denoise = self.denoiser(method, precision, model)
        if method != PeerKind.cbm3d.value:  # threads, allocator, weight layouts: not part of the per-image speed
            denoise(np.random.default_rng(0).random((64, 64, 3), dtype=np.float32), sigma)
        denoise, spent = timed(denoise)
        self.log(f"quality {label} on {data} ({plural(len(paths), 'image')}, sigma {sigma:g})")
        result: EvalResult = evaluate(
            denoise, self.data_root / data, [sigma], seed, label, with_ssim=False, limit=len(paths)
        )
        seconds, megapixels = spent()
        macs = macs_per_pixel(net.spec) if method in ("bundled", "naive") else MACS_PER_PIXEL.get(PeerKind(method))
        self.done[key] = {
            "method": label,
            "key": method,
            "model": model,
            "precision": precision,
            "data": data,
            "images": len(paths),
            "sigma": sigma,
            "seed": seed,
            "psnr": result.mean(sigma),
            "seconds": seconds,
            "mp_per_s": megapixels / seconds if seconds else math.nan,
            "gflop_per_mp": 2 * macs / 1e3 if macs else None,
        }
        return self.done[key]


def weights_digest(weights: Path | None) -> str:
    return sha256_file(Path(weights) if weights is not None else bundled_weights())


def run_accuracy(scorer: Scorer, checks: list[AccuracyCheck], weights_sha256: str | None) -> list[AccuracyOutcome]:
    """Score and judge each check; missing data or weights become 'error' outcomes (raised by the pytest wrappers),
    except a named model not bundled for a check with no baseline yet: that one skips ('no-baseline') and says why.

    weights_sha256: of the Scorer's own model (blind or --weights); a named model's is that of its own file."""
    outcomes = []
    for check in checks:
        try:
            row = scorer.score(check.method, check.data, check.limit, check.sigma, check.seed, model=check.model)
        except (FileNotFoundError, ValueError, ImportError) as err:  # DataIntegrityError is a ValueError
            status, message = "error", str(err)
            if isinstance(err, ModelNotBundled):  # a per-sigma model not bundled yet fails only once it has a baseline
                status = "error" if check.psnr is not None else "no-baseline"
                message = f"{check.key}: {err}" + ("; no baseline recorded: skipped" if status == "no-baseline" else "")
            outcomes.append(
                AccuracyOutcome(
                    check.key, check.method, None, check.psnr, check.tolerance_db, status, message, check.model
                )
            )
            continue
        digest = None
        if check.method == "bundled":
            digest = weights_sha256 if check.model is None else scorer.bundled(check.model)[1]
        outcomes.append(judge(check, row["psnr"], digest))
    return outcomes

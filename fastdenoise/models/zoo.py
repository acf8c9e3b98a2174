"""The models users pick, as the bundled table (`catalog`) says: bundled weights by name, the per-sigma model nearest a
noise level, the task-aware and JPEG models; a noise-level estimate for images of unknown noise, the router that runs
each image's weights, and the x8 flip/rotation self-ensemble."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fastdenoise.models.catalog import MODELS, BundledModel, bundled_model
from fastdenoise.models.checkpoint import DEFAULT_WEIGHTS, bundled_weights

# A per-sigma model serves noise levels within this of its own; farther (or where none is bundled) blind runs: a model
# fine-tuned at one level is worse than blind far from it (half the 15/25/35/50 spacing, which leaves 5 and 60 blind).
PER_SIGMA_REACH = 7.5


def present(folder: Path | None = None) -> list[BundledModel]:
    """The table's models whose file is in folder (default: the package's weights), in the table's order."""
    folder = folder or bundled_weights().parent
    return [model for model in MODELS if (folder / model.file).is_file()]


def bundled_models(folder: Path | None = None) -> list[str]:
    """Names of the bundled weights (blind, sigma25, joint-classify, ...), sorted."""
    return sorted(model.name for model in present(folder))


def weights_in(folder: Path) -> list[str]:
    """Names of the .safetensors files in a folder of one's own models (the accuracy checks' weights folder), sorted;
    the bundled ones are the table's (`bundled_models`)."""
    return sorted(p.stem for p in Path(folder).glob("*.safetensors"))


def per_sigma_models(folder: Path | None = None) -> dict[float, str]:
    """{sigma: name} of the bundled per-sigma models."""
    return {model.sigma: model.name for model in present(folder) if model.sigma is not None}


# The JPEG model (catalog: jpeg=True) runs JPEG inputs where no model is named (`run`, `eval --jpeg`): `blind`
# fine-tuned on noisy patches stored as JPEG (quality 70-95, 4:2:0) and plain ones alike; JPEG after noise leaves it
# correlated, which `blind` keeps ... where its estimated noise level reaches this: below it (a clean or nearly clean
# JPEG) the default runs, as the JPEG model smooths fine texture a clean photo keeps. Chosen on CBSD432 training crops
# stored as JPEG 90 / 75: estimates average 1.5 / 1.2 at sigma 0 and 6.2 / 2.7 at sigma 10 (JPEG hides part of the
# noise from the estimate), and the JPEG model overtakes `blind` between sigma 0 (-0.7 dB) and 5 (+0.2 dB).
JPEG_MIN_SIGMA = 3.0


def jpeg_gate(image: np.ndarray) -> tuple[float, bool]:
    """A JPEG input's estimated noise level (0-255) and whether it runs the JPEG model (from JPEG_MIN_SIGMA)."""
    sigma = estimate_sigma(image)
    return sigma, sigma >= JPEG_MIN_SIGMA


def jpeg_model(folder: Path | None = None) -> Path | None:
    """The bundled weights for noisy photos stored as JPEG, or None where none is bundled."""
    folder = folder or bundled_weights().parent
    return next((folder / model.file for model in present(folder) if model.jpeg), None)


def task_model(task: str, folder: Path | None = None) -> str | None:
    """The bundled model `run --task task` defaults to (catalog: its `tasks`), or None (then the denoising default
    applies). The task-aware model, trained through the frozen heads, measured above its MSE-only control on both
    tasks (docs/task-aware.md)."""
    return next((model.name for model in present(folder) if task in model.tasks), None)


# Below this noise level `run --task` runs `blind` instead of its task-aware default, which paints patterns on clean
# and lightly noisy photos (issue 26, measured: 27.7 / 32.7 / 36.6 dB at sigma 0 / 5 / 10 against blind's 41.7 / 39.2
# / 36.5); the two are level at 10. Each image's level is estimated, or --sigma S given.
TASK_MIN_SIGMA = 10.0


def task_choice(task_weights: Path, folder: Path | None = None) -> Callable[[float | None], Path]:
    """The weights `run --task` runs at a noise level: the task-aware ones from TASK_MIN_SIGMA (or level unknown), the
    blind default below it."""
    blind = (folder or bundled_weights().parent) / DEFAULT_WEIGHTS
    return lambda sigma: task_weights if sigma is None or sigma >= TASK_MIN_SIGMA else blind


def choose_weights(model: str | None, weights: Path | None, sigma: float | None, folder: Path | None = None) -> Path:
    """The weights a command runs: --weights, else --model by name, else the per-sigma model nearest a known --sigma
    if within PER_SIGMA_REACH of it (ties go to the lower sigma), else the blind default."""
    folder = folder or bundled_weights().parent
    if weights is not None and model is not None:
        raise ValueError("--model and --weights both name the weights: give one")
    if weights is not None:
        return Path(weights)
    if model is not None:
        names = bundled_models(folder)
        if model not in names:
            raise ValueError(f"--model {model!r} is not bundled; choose one of {', '.join(names)} (or --weights FILE)")
        return folder / bundled_model(model).file
    levels = per_sigma_models(folder)
    if sigma is not None and levels:
        nearest = min(levels, key=lambda s: (abs(s - sigma), s))
        if abs(nearest - sigma) <= PER_SIGMA_REACH:
            return folder / bundled_model(levels[nearest]).file
    return folder / DEFAULT_WEIGHTS


@dataclass(frozen=True)
class WeightsPlan:
    """The weights a folder run runs (`plan_weights`): those its own backend loads (`default`), and in a routed run
    how each image's are chosen."""

    model: str | None  # bundled weights by name (--task's choice included), or None
    weights: Path | None  # a weights file of one's own, or None
    level: float | None  # the known noise level; under estimate, a stand-in a noise-map default is bound to
    estimate: bool  # each image's level is estimated, and `choose` picks its weights
    asked: bool  # ... because --sigma auto asked for it (else by --task's level rule)
    choose: Callable[[float | None], Path]  # the weights at a noise level (None: unknown)
    jpeg: Path | None  # the weights images stored as JPEG run (from JPEG_MIN_SIGMA), or None

    @property
    def default(self) -> Path:
        return choose_weights(self.model, self.weights, self.level)

    def describe(self) -> str:
        """The weights, as the run's closing line names them."""
        if not self.estimate:
            return weights_label(self.default)
        if self.asked:
            return "per image (--sigma auto)"
        return f"per image (the task-aware model from an estimated sigma of {TASK_MIN_SIGMA:g}, blind below)"


def weights_label(weights: Path) -> str:
    """A bundled weights file by its model name (as `--model` takes it), anything else as its path."""
    bundled = Path(weights).parent.resolve() == bundled_weights().parent.resolve()
    return f"{Path(weights).stem} (bundled)" if bundled else str(weights)


def plan_weights(
    model: str | None = None,
    weights: Path | None = None,
    sigma: float | None = None,
    auto: bool = False,
    task: str | None = None,
    fixed: bool = False,
) -> WeightsPlan:
    """The weights of `run` with these options: --weights, --model, the per-sigma model for --sigma S, each image's
    by its estimated level (--sigma auto), --task's model (the task-aware one from TASK_MIN_SIGMA, blind below), and
    the JPEG model for JPEG inputs where no model is named. `fixed`: one file runs every image (an --engine, Ray), so
    nothing is chosen per image. ValueError for a model that is not bundled, or --model with --weights."""
    estimate, choose = auto, None
    if task is not None and model is None and weights is None:
        model = task_model(task)  # the recommended task-aware model, where bundled ...
        if model is not None and not fixed:  # ... from TASK_MIN_SIGMA; blind below
            choose = task_choice(choose_weights(model, None, None))
            model = model if sigma is None else choose(sigma).stem
            estimate = sigma is None  # each image's level estimated unless --sigma S
    chosen = choose_weights(model, weights, None)  # checks the names before any image is read
    if choose is None:
        choose = functools.partial(choice_at, model, weights, sigma, estimate)
    jpeg = jpeg_model() if model is None and weights is None and not fixed else None
    if estimate and takes_level(chosen):
        sigma = 25.0  # a noise-map model: the router binds each image's level; this is a stand-in
    return WeightsPlan(model, Path(weights) if weights else None, sigma, estimate, auto, choose, jpeg)


def choice_at(
    model: str | None, weights: Path | None, known: float | None, estimate: bool, sigma: float | None
) -> Path:
    """`choose_weights` at each image's estimated level `sigma` under estimate, else at the known level."""
    return choose_weights(model, weights, sigma if estimate else known)


def takes_level(weights: Path) -> bool:
    """Whether the weights are a noise-map model (a file that cannot load says so later, where it is loaded)."""
    from fastdenoise.models.checkpoint import CheckpointError, load_denoiser

    try:
        return load_denoiser(Path(weights)).spec.noise_map
    except (CheckpointError, ValueError, OSError):
        return False


def estimate_sigma(image: np.ndarray) -> float:
    """Noise level (0-255 units) of an 8-bit image with additive white Gaussian noise: the PCA estimate, mapped
    through CALIBRATION (clipping to 0-255 lowers the raw estimate at high sigma, texture raises it at low sigma)."""
    raw = raw_sigma(image)
    return (
        float(np.interp(raw, *CALIBRATION))
        if raw <= CALIBRATION[0][-1]
        else raw + CALIBRATION[1][-1] - CALIBRATION[0][-1]
    )


def raw_sigma(image: np.ndarray, patch: int = 7, samples: int = 60_000, seed: int = 0) -> float:
    """The PCA noise estimate of Chen, Zhu and Heng (ICCV 2015), uncalibrated: the noise variance is the mean of the
    trailing eigenvalues of the patch covariance, over the largest tail whose mean equals its median (the
    eigenvalues that image structure does not reach).

    image: (H, W, C) uint8, or float in [0, 1]. Patches are patch x patch per channel, `samples` of them at random."""
    x = image.astype(np.float64) * (255.0 if image.dtype != np.uint8 else 1.0)
    h, w, c = x.shape
    if min(h, w) < patch:
        raise ValueError(f"image of {h}x{w} is smaller than the {patch}px patch of the noise estimate")
    planes = np.moveaxis(x, -1, 0)  # (C, H, W)
    windows = np.lib.stride_tricks.sliding_window_view(planes, (patch, patch), axis=(1, 2))  # (C, H-p+1, W-p+1, p, p)
    count = windows.shape[0] * windows.shape[1] * windows.shape[2]
    rng = np.random.default_rng(seed)
    pick = rng.choice(count, size=min(samples, count), replace=False)
    ci, rest = np.divmod(pick, windows.shape[1] * windows.shape[2])
    yi, xi = np.divmod(rest, windows.shape[2])
    vectors = windows[ci, yi, xi].reshape(len(pick), patch * patch)  # (samples, p^2)
    vectors = vectors - vectors.mean(0)
    eig = np.sort(np.linalg.eigvalsh(vectors.T @ vectors / len(vectors)))[::-1]  # descending
    for start in range(len(eig)):
        tail = eig[start:]
        tau = tail.mean()
        if np.sum(tail > tau) >= np.sum(tail < tau):  # mean no longer pulled above the median: only noise is left
            return float(np.sqrt(max(tau, 0.0)))
    return float(np.sqrt(max(eig[-1], 0.0)))


class SigmaRouter:
    """Weights per image. `run --sigma auto` (estimate=True): each image's noise level is estimated (`estimate_sigma`)
    and the weights `choose(sigma)` names run it (by default the bundled per-sigma model nearest the estimate, blind
    where none is bundled); weights that `takes_level` (a noise-map model) run bound to the estimate on a LEVEL_STEP
    grid. `jpeg`: the weights images stored as JPEG run instead (estimate or not). Each weights file and level gets its
    backend once, on first use, from `build(weights, level)`."""

    def __init__(
        self,
        build: Callable[[Path, float | None], object],
        choose: Callable[[float | None], Path] | None = None,
        takes_level: Callable[[Path], bool] = lambda weights: False,
        jpeg: Path | None = None,
        estimate: bool = True,
    ) -> None:
        self.build, self.built = build, {}
        self.takes_level = functools.cache(takes_level)  # asked per image: each weights file is read once
        self.choose = choose or (lambda sigma: choose_weights(None, None, sigma))
        self.jpeg, self.estimate = jpeg, estimate

    def weights(self, image: np.ndarray, stored_as_jpeg: bool = False) -> tuple[float | None, Path, float | None]:
        """The image's estimated noise level (0-255; None without estimate), the weights chosen for it and the level
        they are bound to. A JPEG input runs the JPEG model from JPEG_MIN_SIGMA (its level is estimated for that)."""
        sigma: float | None
        if stored_as_jpeg and self.jpeg is not None:
            sigma, noisy = jpeg_gate(image)
            if noisy:
                return sigma, Path(self.jpeg), None
        else:
            sigma = estimate_sigma(image) if self.estimate else None
        weights = Path(self.choose(sigma if self.estimate else None))
        return sigma, weights, grid_level(sigma) if self.estimate and self.takes_level(weights) else None

    def backend(self, weights: Path, level: float | None = None):
        if (weights, level) not in self.built:
            self.built[weights, level] = self.build(weights, level)
        return self.built[weights, level]


LEVEL_STEP = 2.5  # --sigma auto binds a noise-map model to the estimate rounded to this: at most 31 backends to 75


def grid_level(sigma: float) -> float:
    """The estimate on the LEVEL_STEP grid, within the 0-75 a noise-map model is trained for."""
    return min(max(round(sigma / LEVEL_STEP) * LEVEL_STEP, 0.0), 75.0)


class SelfEnsemble:
    """A backend run on the 8 flips/rotations of each batch, outputs turned back and averaged (8x the compute).

    Wraps any Backend; square and non-square images alike (a rotation swaps H and W, the backends take any size)."""

    def __init__(self, backend) -> None:
        self.backend, self.device = backend, backend.device

    def __call__(self, x: Tensor) -> Tensor:
        total = torch.zeros_like(x)
        for k in range(8):
            view = torch.rot90(x, k % 4, (2, 3))
            view = view.flip(3) if k >= 4 else view
            y = self.backend(view.contiguous())
            y = y.flip(3) if k >= 4 else y
            total += torch.rot90(y, -(k % 4), (2, 3))
        return total / 8


# Mean raw estimate at true sigma 0, 5, ..., 90 on 24 CBSD432 training photos (noise clipped and rounded to 8 bits):
# made by `python bench/calibrate_sigma.py ../shared/data/cbsd432 --images 24` (seed 1).
CALIBRATION = (
    (
        5.90,
        7.88,
        11.71,
        16.01,
        20.50,
        24.95,
        29.37,
        33.72,
        37.89,
        42.00,
        45.91,
        49.66,
        53.25,
        56.71,
        60.00,
        63.07,
        66.01,
        68.75,
        71.36,
    ),
    (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90),
)

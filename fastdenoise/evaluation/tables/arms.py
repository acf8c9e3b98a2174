"""The rows of the paper's tables: arms (a denoiser, or none, and where it runs), the split rule of labels.csv, and
the arms made from weights files and peers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from fastdenoise.choices import PEERS, Split
from fastdenoise.evaluation.evaluate import Denoise, output_key
from fastdenoise.files import atomic_write
from fastdenoise.noise import to_uint8

NOISY, CLEAN = "noisy", "clean"  # the arm without a denoiser, and the head on the clean image (no noise, sigma None)


ProgressFn = Callable[[int, int, str], None]  # (done, total, what was just done)


def split_positions(count: int, split: Split | str) -> list[int]:
    """Row positions 0..count-1 of the split: all, even (train) or odd (test)."""
    split = Split(split)
    start, step = (0, 1) if split is Split.all else (0 if split is Split.train else 1, 2)
    return list(range(start, count, step))


@dataclass(frozen=True)
class Arm:
    """One row of a table: how the noisy image becomes the head's input (denoise None: the noisy image as it is)."""

    name: str
    denoise: Denoise | None = None
    limit: int | None = None  # only the first N images (a CBM3D subset)
    sigmas: tuple[float, ...] | None = None  # only these noise levels (a CDnCNN trained for one sigma)
    source: str = ""  # weights file or package, for the record
    trained_on: str | None = None  # the folder its weights were trained on (their card), to flag held-in evaluations

    def __post_init__(self) -> None:
        if not self.name or self.name == CLEAN:
            raise ValueError(f"an arm needs a name other than '' and {CLEAN!r}, got {self.name!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"arm {self.name!r}: limit must be >= 1 or None, got {self.limit}")

    def runs(self, sigma: float, position: int) -> bool:
        return (self.limit is None or position < self.limit) and (self.sigmas is None or sigma in self.sigmas)

    def record(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "limit": self.limit,
            "sigmas": self.sigmas,
            "trained_on": self.trained_on,
        }


def check_arms(arms: Sequence[Arm]) -> None:
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")


def parse_named(text: str) -> tuple[str, Path]:
    """'NAME=PATH' -> (NAME, PATH); a bare PATH (which may itself hold '=') -> (its stem, PATH)."""
    if Path(text).is_file() or "=" not in text:
        return Path(text).stem, Path(text)
    name, path = text.split("=", 1)
    if not name.strip():
        raise ValueError(f"{text!r}: expected NAME=PATH or PATH")
    return name.strip(), Path(path)


def model_arm(name: str, weights: Path | None, device: str = "auto", output_cache: Path | None = None) -> Arm:
    """An arm running one of our denoisers (None: the bundled weights) in fp32, BN folded, on `device`; with
    `output_cache`, its 8-bit outputs are kept there (OutputCache) for the next table over the same images."""
    from fastdenoise.backends import BackendConfig, make_backend
    from fastdenoise.evaluation.evaluate import backend_denoiser
    from fastdenoise.models.checkpoint import bundled_weights, load_denoiser

    model = load_denoiser(weights)
    backend = make_backend(model, BackendConfig(device=device, precision="fp32"))
    denoise = backend_denoiser(backend)
    if output_cache is not None:
        from fastdenoise.engines.export import weights_sha256

        denoise = OutputCache(denoise, Path(output_cache) / f"{weights_sha256(model)[:24]}-fp32-{backend.device.type}")
    return Arm(name, denoise, source=str(weights or bundled_weights()), trained_on=training_folder(weights))


class OutputCache:
    """A denoiser whose outputs are kept on disk, rounded to 8 bits, by (noisy input, sigma) in a folder of one
    model, precision and device. Every table rounds a denoised image to 8 bits before scoring it (PSNR or a head's
    input), so a hit gives exactly what the model would: a second classifier over the same noisy photos (--head
    efficientnet-lite1 after lite0) runs no denoiser."""

    def __init__(self, denoise: Denoise, folder: Path) -> None:
        self.denoise, self.folder, self.hits = denoise, Path(folder), 0

    def __call__(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        path = self.folder / f"{output_key(noisy, sigma)}.npy"
        if path.is_file():
            self.hits += 1
            return np.load(path).astype(np.float32) / 255.0
        out = to_uint8(self.denoise(noisy, sigma))
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: np.save(handle, out))
        return out.astype(np.float32) / 255.0


def training_folder(weights: Path | None) -> str | None:
    """The training-data folder named in a weights file's card (bundled cards, `train` and `train --task` runs)."""
    from fastdenoise.models.checkpoint import read_card

    try:
        card = read_card(weights)
    except Exception:  # a .pt checkpoint or a file without a card: nothing recorded
        return None
    config = card.get("config") or {}
    data = card.get("train_data") or config.get("data") or (config.get("train") or {}).get("data")
    return str(data).split(",")[0].strip() if data else None


def held_in(arms: Sequence[Arm], data: str) -> list[str]:
    """Arms whose weights were trained on photos of the evaluated folder (same folder, or the same last two parts)."""
    target = Path(data).resolve()
    return [
        a.name
        for a in arms
        if a.trained_on
        and (Path(a.trained_on).resolve() == target or Path(a.trained_on).parts[-2:] == target.parts[-2:])
    ]


def per_sigma_dncnn(data_root: Path, device: str = "auto") -> Denoise:
    """CDnCNN with the network trained for each sigma (25, 35, 50), each loaded when first needed."""
    from fastdenoise.devices import resolve_device
    from fastdenoise.evaluation.peers import TRAINED_SIGMA, load_peer_model, run_on_array

    kinds = {sigma: kind for kind, sigma in TRAINED_SIGMA.items()}
    models: dict[float, nn.Module] = {}

    def denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
        if sigma not in kinds:
            raise ValueError(f"no CDnCNN trained for sigma {sigma:g}; there are {sorted(kinds)}")
        if sigma not in models:
            models[sigma] = load_peer_model(kinds[sigma], data_root).to(resolve_device(device))
        return run_on_array(models[sigma], noisy, sigma)

    return denoise


def peer_arm(
    name: str, data_root: Path, device: str = "auto", cbm3d_limit: int | None = None, cache_dir: Path | None = None
) -> Arm:
    """A peer as an arm: CNN weights from data_root/weights (see the data README), CBM3D with its on-disk cache."""
    from fastdenoise.devices import resolve_device
    from fastdenoise.evaluation.peers import LABELS, TRAINED_SIGMA, WEIGHT_FILES, PeerKind, make_peer

    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    if name == "cdncnn":
        return Arm(
            "CDnCNN",
            per_sigma_dncnn(data_root, device),
            sigmas=tuple(sorted(TRAINED_SIGMA.values())),
            source=f"{data_root}/weights/dncnn/color_sigma=*.mat",
        )
    kind = PeerKind(name)
    denoise = make_peer(kind, data_root, resolve_device(device), cache_dir)
    if kind is PeerKind.cbm3d:
        return Arm(
            LABELS[kind],
            denoise,
            limit=cbm3d_limit,
            source=f"bm3d {getattr(denoise, 'version', '')}, cache {getattr(denoise, 'cache_dir', '')}",
        )
    trained = (TRAINED_SIGMA[kind],) if kind in TRAINED_SIGMA else None
    return Arm(LABELS[kind], denoise, sigmas=trained, source=str(Path(data_root) / WEIGHT_FILES[kind]))


def task_arms(
    separate: Path | None = None,
    joint: Path | None = None,
    cross_task: Path | None = None,
    cbm3d: int = 0,
    extra: Sequence[tuple[str, Path]] = (),
    device: str = "auto",
    cache_dir: Path | None = None,
    output_cache: Path | None = None,
) -> list[Arm]:
    """The rows of Tables 2 and 3 in the paper's order: noisy, CBM3D (first `cbm3d` images; 0: none), separate, joint,
    cross-task, then `extra` (name, weights); an arm whose weights are not given is left out."""
    arms = [Arm(NOISY)]
    if cbm3d > 0:
        arms.append(peer_arm("cbm3d", Path("."), "cpu", cbm3d, cache_dir))
    for name, weights in (("separate", separate), ("joint", joint), ("cross-task", cross_task), *extra):
        if weights is not None:
            arms.append(model_arm(name, Path(weights), device, output_cache))
    return arms

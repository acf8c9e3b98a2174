"""The settings of a training run (`TrainConfig`, saved as config.json), the learning-rate schedules they name, and
the rules of a run folder: a run in it is continued only when asked to, with the settings it was started with."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastdenoise.choices import Amp, Schedule, Switch, values
from fastdenoise.datasets import evaluation_set
from fastdenoise.models.denoiser import DenoiserSpec
from fastdenoise.noise import check_sigma
from fastdenoise.training.losses import LOSSES


@dataclass(frozen=True)
class TrainConfig:
    """Every option of `fastdenoise train`; saved as config.json beside the checkpoints."""

    data: str
    out: str
    val: str | None = None
    sigma: tuple[float, float] = (25.0, 25.0)  # lo == hi: fixed sigma; else uniform per patch (blind)
    patch: int = 48
    batch: int = 32
    steps: int = 20_000
    lr: float = 1e-3
    lr_min: float = 1e-5
    warmup: int = 200
    schedule: str = (
        "cosine"  # cosine: warm-up then cosine to lr_min at `steps`; constant: warm-up then flat (campaigns)
    )
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); validated and saved when on
    loss: str = "mse"  # mse | l1 | charbonnier: the reconstruction loss of separate training
    weight_decay: float = 0.0
    freeze_bn: bool = False  # BatchNorm normalizes with, and keeps, its running statistics while training (fine-tunes)
    val_every: int = 1000
    val_images: int = 12
    val_sigma: float | None = None  # default: the middle of the sigma range
    ckpt_every: int = 250
    log_every: int = 10
    seed: int = 0
    jpeg: tuple[int, int] | None = None  # a JPEG quality range: a share of the noisy patches stored as JPEG (4:2:0)
    jpeg_share: float = 0.5  # ... that share of them, when `jpeg` is set
    extra: tuple[str, ...] = ()  # more folders of clean training photos, drawn from with DATA's (every photo alike)
    colour: float = 0.0  # the share of clean patches given a random channel order, saturation and hue (0: off)
    downscale: float = 1.0  # patches cut from squares up to this many times larger, shrunk to the patch (1: off)
    device: str = "auto"
    amp: str = "auto"  # auto | off | bf16 | fp16
    compile: str = "auto"  # auto | on | off
    channels_last: bool = True
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (CUDA only); default per rank
    world_size: int = 1  # processes training together (torchrun's WORLD_SIZE; set by fit, not an option)
    spec: dict = field(default_factory=lambda: asdict(DenoiserSpec()))

    def __post_init__(self) -> None:
        lo, hi = (check_sigma(s) for s in self.sigma)
        if lo > hi:
            raise ValueError(f"sigma range must be lo <= hi, got {self.sigma}")
        for name in ("patch", "batch", "steps", "val_every", "ckpt_every", "log_every", "world_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patch % 4:
            raise ValueError(f"patch must be a multiple of 4, got {self.patch}")
        for name, choice in (("amp", Amp), ("compile", Switch), ("schedule", Schedule)):
            if getattr(self, name) not in values(choice):
                raise ValueError(f"{name} must be one of {', '.join(values(choice))}; got {getattr(self, name)!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be a decay in [0, 1), got {self.ema}")
        if self.jpeg is not None and not 1 <= self.jpeg[0] <= self.jpeg[1] <= 100:
            raise ValueError(f"jpeg must be a quality range lo-hi within 1-100, got {self.jpeg}")
        if not 0.0 <= self.jpeg_share <= 1.0:
            raise ValueError(f"jpeg_share must be in [0, 1], got {self.jpeg_share}")
        if not 0.0 <= self.colour <= 1.0:
            raise ValueError(f"colour must be a share in [0, 1], got {self.colour}")
        if not 1.0 <= self.downscale <= 4.0:
            raise ValueError(f"downscale must be a factor in [1, 4], got {self.downscale}")
        for folder in (self.data, *self.extra):
            if evaluation_set(folder):
                raise ValueError(f"{folder}: {evaluation_set(folder)}; train on training photos only")


# Options that may change when a run is resumed; every other one is the run's identity.
RESUMABLE_CHANGES = frozenset(
    {"steps", "lr", "lr_min", "val_every", "val_images", "ckpt_every", "log_every", "device", "compile", "sync_bn"}
    | {"world_size"}  # a run resumes on any number of processes
)


def warmup_cosine(warmup: int, steps: int, floor: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to `floor`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def warmup_constant(warmup: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then flat; needs no final step count, so a run can be extended at will."""
    return lambda step: min(1.0, (step + 1) / warmup)


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """The LR multiplier of cfg's schedule."""
    if cfg.schedule == "constant":
        return warmup_constant(cfg.warmup)
    return warmup_cosine(cfg.warmup, cfg.steps, cfg.lr_min / cfg.lr)


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse (ValueError) a run folder that holds a run (its last.pt) unless asked to resume it: training into it
    would silently continue that run, with its settings and step."""
    if (Path(out) / "last.pt").exists() and not resume:
        raise ValueError(f"{out}: holds a run already; pass --resume to continue it or choose another --out")


def read_config(path: Path) -> dict:
    """A run's config.json as a dict; ValueError for one that is not (damaged, or not a config)."""
    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable run config ({err})") from err
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: not a run config (a JSON {type(stored).__name__})")
    return stored


def resumed_config(cfg: TrainConfig, stored: dict, out: Path, given: Collection[str]) -> TrainConfig:
    """The stored config of the run in folder `out`, with the fields of `cfg` named in `given` (the options given
    anew) where they may change (RESUMABLE_CHANGES: steps, LR ...). A field given with another value than the run was
    started with is refused (ValueError): it would silently make another run."""
    fresh = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as in config.json
    defaults = json.loads(json.dumps(asdict(TrainConfig(data=".", out="."))))  # a field newer than the run's config
    merged = {**stored, "out": str(out)}  # a run lives in --out: a stored (copied, relative) out never redirects it
    for name, value in fresh.items():
        if name == "out" or name not in given or name not in defaults:
            continue
        started = stored.get(name, defaults[name])
        if name in ("data", "val") and value and started:
            same = Path(value).resolve() == Path(started).resolve()
        elif name == "extra":
            same = [Path(v).resolve() for v in value] == [Path(v).resolve() for v in started]
        else:
            same = value == started
        if same or name in RESUMABLE_CHANGES:
            merged[name] = value
        else:
            flag = "DATA" if name == "data" else "--" + name.replace("_", "-")
            was, now = (("-".join(f"{v:g}" for v in x) if name == "sigma" else x) for x in (started, value))
            raise ValueError(
                f"{out}: the run was started with {flag} {was}, not {now}; drop {flag} to resume it as it "
                "was, or train into another --out"
            )
    try:
        return TrainConfig(**{**merged, "sigma": tuple(merged["sigma"]), "extra": tuple(merged.get("extra", ()))})
    except TypeError as err:
        raise ValueError(f"{out / 'config.json'}: not a config of this version ({err})") from err

"""One training loop (`fit`) for every objective: separate MSE training and joint task-aware training."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.checkpoint import CheckpointError, load_checkpoint, load_denoiser, save_checkpoint, save_weights
from fastdenoise.data import Batch, PatchSampler, load_folder
from fastdenoise.metrics import psnr
from fastdenoise.model import Denoiser, DenoiserSpec
from fastdenoise.noise import add_noise, check_sigma, to_uint8

LossFn = Callable[[nn.Module, Batch], tuple[Tensor, dict[str, float]]]
Validate = Callable[[nn.Module], dict[str, float]]


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
    weight_decay: float = 0.0
    val_every: int = 1000
    val_images: int = 12
    val_sigma: float | None = None  # default: the middle of the sigma range
    ckpt_every: int = 250
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto | off | bf16 | fp16
    compile: str = "auto"  # auto | on | off
    channels_last: bool = True
    spec: dict = field(default_factory=lambda: asdict(DenoiserSpec()))

    def __post_init__(self) -> None:
        lo, hi = (check_sigma(s) for s in self.sigma)
        if lo > hi:
            raise ValueError(f"sigma range must be lo <= hi, got {self.sigma}")
        for name in ("patch", "batch", "steps", "val_every", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patch % 4:
            raise ValueError(f"patch must be a multiple of 4, got {self.patch}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be one of auto, off, bf16, fp16; got {self.amp!r}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be one of auto, on, off; got {self.compile!r}")


def resolve_device(name: str) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' -> a device this machine has; ValueError naming the choices otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    choices = "auto, cpu, cuda, cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists two dozen device types this tool does not run on
        raise ValueError(f"device {name!r} is not one of {choices}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not one of {choices}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def cpu_has_bf16() -> bool:
    """True where oneDNN has native bf16 (AVX512-BF16 or AMX), so bf16 autocast is faster, not slower."""
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_bf16() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def mse_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """The separate objective: MSE between D(noisy) and clean."""
    loss = F.mse_loss(model(batch.noisy).float(), batch.clean)
    return loss, {"mse": loss.item()}


def warmup_cosine(warmup: int, steps: int, floor: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to `floor`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterator[Batch],
    cfg: TrainConfig,
    validate: Validate | None = None,
    progress: bool = True,
) -> nn.Module:
    """Train `model` on `loss_fn` for cfg.steps steps; checkpoints to cfg.out/last.pt and resumes from it.

    `batches` must expose state_dict()/load_state_dict() so a resumed run draws the same batches.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup, cfg.steps, cfg.lr_min / cfg.lr))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    step, best = 0, -math.inf
    ckpt_path = out / "last.pt"
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{ckpt_path}: cannot resume, it does not match this model ({str(err)[:200]})") from err
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        batches.load_state_dict(state["batches"])  # type: ignore[attr-defined]
        torch.set_rng_state(state["torch_rng"])
        step, best = state["step"], state["best"]
    use_compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    forward = torch.compile(model) if use_compile else model

    def checkpoint(batches_state: dict | None = None) -> None:
        save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "batches": batches_state or batches.state_dict(),  # type: ignore[attr-defined]
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "best": best,
                "spec": getattr(model, "spec", None) and asdict(model.spec),  # type: ignore[arg-type]
                "config": asdict(cfg),
            },
            ckpt_path,
        )

    log = (out / "log.jsonl").open("a")
    bar = _progress(progress)
    task = bar.add_task("train", total=cfg.steps, completed=step, loss=math.nan, psnr=math.nan, rate=0.0)
    tick, seen = time.perf_counter(), 0
    model.train()
    with bar, log:
        try:
            while step < cfg.steps:
                before = batches.state_dict()  # type: ignore[attr-defined]
                batch = next(batches).to(device)
                if cfg.channels_last:
                    batch.noisy = batch.noisy.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    loss, logs = loss_fn(forward, batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                before = None
                seen += batch.noisy.shape[0]
                value = loss.item()
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss became {value} at step {step}; lower --lr or use --amp off")
                row: dict[str, Any] = {}
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    rate, tick, seen = seen / (now - tick), now, 0
                    row = {"step": step, "loss": value, "lr": scheduler.get_last_lr()[0], "samples_per_s": rate, **logs}
                    bar.update(task, rate=rate / batch.noisy.shape[0])
                if validate is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                    model.eval()
                    scores = validate(model)
                    model.train()
                    row = {"step": step, **row, **{f"val_{k}": v for k, v in scores.items()}}
                    if scores.get("psnr", -math.inf) > best:
                        best = scores["psnr"]
                        save_weights(model, out / "best.safetensors", {"step": step, "val_psnr": best})  # type: ignore[arg-type]
                    bar.update(task, psnr=scores.get("psnr", math.nan))
                if row:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                bar.update(task, completed=step, loss=value)
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    checkpoint()
        except KeyboardInterrupt:
            # Save the last completed step, with the batch source as it was before the unfinished step drew.
            checkpoint(before)
            bar.console.print(f"interrupted: checkpoint at step {step} in {ckpt_path}; continue with --resume")
            raise
    model.eval()
    return model


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.2e}  val {task.fields[psnr]:.2f} dB"),
        TextColumn("{task.fields[rate]:.2f} it/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def psnr_validator(folder: Path, sigma: float, limit: int, seed: int = 0) -> Validate:
    """Validation on the first `limit` images of a folder: mean PSNR of the fp32 output, noise per the protocol."""
    clean = load_folder(folder, limit)
    noisy = [add_noise(im, sigma, seed, i) for i, im in enumerate(clean)]

    @torch.no_grad()
    def validate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        scores = []
        for im, x in zip(clean, noisy):
            t = torch.from_numpy(x).permute(2, 0, 1)[None].to(device)
            y = model(t)[0].permute(1, 2, 0).float().cpu().numpy()
            scores.append(psnr(to_uint8(y), im))
        return {"psnr": float(np.mean(scores))}

    return validate


def train_denoiser(cfg: TrainConfig, progress: bool = True, init: str | None = None) -> Denoiser:
    """Separate (MSE) training of a Denoiser on a folder of clean images; writes model.safetensors to cfg.out.

    init: start from these weights (fine-tuning, e.g. the MSE control of a joint run on the same photos)."""
    images = load_folder(Path(cfg.data))
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    model = Denoiser(DenoiserSpec(**cfg.spec))
    if init is not None:
        start = load_denoiser(Path(init))
        if start.spec != model.spec:
            raise ValueError(f"{init}: its architecture {asdict(start.spec)} differs from train.spec {cfg.spec}")
        model.load_state_dict(start.state_dict())
    sampler = PatchSampler(images, cfg.patch, cfg.batch, cfg.sigma, cfg.seed)
    val_sigma = cfg.val_sigma if cfg.val_sigma is not None else sum(cfg.sigma) / 2
    validate = psnr_validator(Path(cfg.val), val_sigma, cfg.val_images) if cfg.val else None
    fit(model, mse_loss, sampler, cfg, validate, progress)
    save_weights(model.cpu(), Path(cfg.out) / "model.safetensors", {"config": asdict(cfg), "init": init})
    return model  # type: ignore[return-value]

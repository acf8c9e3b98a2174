"""One training loop (`fit`) for every objective: separate MSE training and joint task-aware training."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise import distributed
from fastdenoise.checkpoint import CheckpointError, load_checkpoint, load_denoiser, save_checkpoint, save_weights
from fastdenoise.data import Batch, PatchSampler, folder_images, load_folder
from fastdenoise.devices import resolve_amp, resolve_device
from fastdenoise.images import load_rgb
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
    schedule: str = "cosine"  # cosine: warm-up then cosine to lr_min at `steps`; constant: warm-up then flat (campaigns)
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
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be one of auto, off, bf16, fp16; got {self.amp!r}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be one of auto, on, off; got {self.compile!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be a decay in [0, 1), got {self.ema}")


# Options that may change when a run is resumed; every other one is the run's identity.
RESUMABLE_CHANGES = frozenset(
    {"steps", "lr", "lr_min", "val_every", "val_images", "ckpt_every", "log_every", "device", "compile", "sync_bn"}
    | {"world_size"}  # a run resumes on any number of processes
)


def mse_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """The separate objective: MSE between D(noisy) and clean."""
    loss = F.mse_loss(model(batch.noisy).float(), batch.clean)
    return loss, {"mse": loss.item()}


def l1_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """Mean absolute error; MSE is logged beside it so arms compare on one scale."""
    out = model(batch.noisy).float()
    loss = F.l1_loss(out, batch.clean)
    return loss, {"mse": F.mse_loss(out.detach(), batch.clean).item()}


def charbonnier_loss(model: nn.Module, batch: Batch, eps: float = 1e-3) -> tuple[Tensor, dict[str, float]]:
    """sqrt(d^2 + eps^2), a differentiable L1 (eps = 1e-3 on [0, 1] pixels, a quarter of one 8-bit level)."""
    out = model(batch.noisy).float()
    loss = torch.sqrt((out - batch.clean).square() + eps * eps).mean()
    return loss, {"mse": F.mse_loss(out.detach(), batch.clean).item()}


LOSSES: dict[str, LossFn] = {"mse": mse_loss, "l1": l1_loss, "charbonnier": charbonnier_loss}


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


SCHEDULES = ("cosine", "constant")


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    if cfg.schedule == "constant":
        return warmup_constant(cfg.warmup)
    return warmup_cosine(cfg.warmup, cfg.steps, cfg.lr_min / cfg.lr)


class TrainingStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; fit finished the step under way, checkpointed and stopped. `signum` says which."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by signal {signum} after step {step}")
        self.signum, self.step = signum, step


class StopSignals:
    """Within the block, SIGINT/SIGTERM only set `received`, so the loop stops between steps, never inside one."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set from the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.saved[signum] = signal.signal(signum, self.handle)
        return self

    def handle(self, signum: int, frame: object) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)


class WeightAverage:
    """Exponential moving average of a model's weights (BatchNorm statistics copied), a model of its own to validate."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # short memory at first, so early weights fade fast
        ours = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        theirs = [t for t in model.state_dict().values() if t.is_floating_point()]
        torch._foreach_lerp_(ours, theirs, 1.0 - decay)
        for mine, other in zip(self.model.buffers(), model.buffers()):
            if not mine.is_floating_point():
                mine.copy_(other)


def optimizer_step(
    forward: nn.Module, loss_fn: LossFn, batch: Batch, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    amp: torch.dtype | None,
) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
    """One step of `fit` (also what the benchmark times): the loss under autocast, backward through the grad scaler
    (a no-op unless fp16), the optimizer step; returns the loss and its logs."""
    with torch.autocast(batch.noisy.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        loss, logs = loss_fn(forward, batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logs


def train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """model.train(), but with freeze_bn every BatchNorm stays in eval mode: a training step then computes what
    inference computes, and a fine-tune on small batches keeps the statistics its init was averaged with."""
    model.train()
    if freeze_bn:
        for layer in model.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()


def restore(
    state: dict, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    scaler: torch.amp.GradScaler, average: WeightAverage | None, cfg: TrainConfig,
) -> tuple[int, float, int]:  # fmt: skip
    """Load a checkpoint's model, weight average, optimizer, scheduler and scaler; the LR follows the settings now in
    force (--lr and --steps may change on resume). Returns the step, best validation PSNR and pixels seen."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if average is not None:
            average.model.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot resume, it does not match this model ({str(err)[:200]})") from err
    scheduler.load_state_dict(state["scheduler"])
    scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = cfg.lr, cfg.lr * lr_factor(cfg)(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    scaler.load_state_dict(state["scaler"])
    return state["step"], state["best"], state.get("pixels", 0)


def restore_streams(state: dict, batches: Any, loss_fn: Any, rank: int) -> None:
    """Rank r continues rank r's sampler and RNG streams of the run that saved (absent "ranks": one process); a rank
    that run did not have starts its own from the beginning, patches no rank drew yet. A stateful loss resumes too."""
    ranks = state.get("ranks") or [{"batches": state["batches"], "torch_rng": state["torch_rng"]}]
    if rank < len(ranks):
        batches.load_state_dict(ranks[rank]["batches"])
        torch.set_rng_state(ranks[rank]["torch_rng"])
    if loss_fn is not None and state.get("loss") is not None:
        loss_fn.load_state_dict(state["loss"])


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterator[Batch],
    cfg: TrainConfig,
    validate: Validate | None = None,
    progress: bool = True,
) -> nn.Module:
    """Train `model` on `loss_fn` for cfg.steps steps; checkpoints to cfg.out/last.pt and resumes from it.

    `batches` must expose state_dict()/load_state_dict() so a resumed run draws the same batches; a `loss_fn` that
    does too (a balanced JointLoss) is checkpointed with them, so a resumed run keeps its state. SIGINT/SIGTERM stop
    the run between two steps with a checkpoint (raising TrainingStopped), so stop + resume equals an unbroken run.
    Returns the trained model, or its weight average when cfg.ema is on.

    Inside a process group of W ranks (torchrun; `distributed.process_group`) the model is DistributedDataParallel:
    each rank draws cfg.batch / W patches from its own `batches`, gradients are averaged, and rank 0 alone validates,
    logs and writes (cfg.out need not exist elsewhere). The checkpoint keeps every rank's sampler and RNG state.
    """
    shard = distributed.group_shard()
    lead = shard.rank == 0
    device = resolve_device(distributed.shard_device(cfg.device, shard))
    if cfg.sync_bn and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA devices: torch has no SyncBatchNorm on the CPU")
    distributed.rank_batch(cfg.batch, shard)  # refuse a global batch the ranks cannot share equally
    cfg = replace(cfg, world_size=shard.world)
    out = Path(cfg.out)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        for leftover in out.glob(".*.part"):  # temporary files of a process that was killed while writing
            leftover.unlink(missing_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    amp = resolve_amp(cfg.amp, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.sync_bn and shard.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    step, best, pixels = 0, -math.inf, 0
    stateful_loss = hasattr(loss_fn, "state_dict") and hasattr(loss_fn, "load_state_dict")
    ckpt_path = out / "last.pt"
    state = distributed.from_rank0(lambda: load_checkpoint(ckpt_path) if ckpt_path.exists() else None, shard)
    if state is not None:
        step, best, pixels = restore(state, ckpt_path, model, optimizer, scheduler, scaler, average, cfg)
        restore_streams(state, batches, loss_fn if stateful_loss else None, shard.rank)
    state = None
    use_compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    trained: nn.Module = model
    if shard.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Built after the resume: it hands rank 0's weights and buffers to every rank, and all-reduces the gradients.
        # BN normalizes each rank's own share of the batch (running statistics: rank 0's, broadcast every step).
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(trained) if use_compile else trained
    final = average.model if average is not None else model

    def checkpoint(batches_state: dict | None = None, loss_state: dict | None = None) -> None:
        own = {"batches": batches_state or batches.state_dict(), "torch_rng": torch.get_rng_state()}  # type: ignore[attr-defined]
        ranks = distributed.gather(own, shard)
        if not lead:
            return
        save_checkpoint(
            {
                "model": model.state_dict(),
                "ema": average.model.state_dict() if average is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "batches": own["batches"],  # rank 0's: what a one-process resume (and older versions) read
                "loss": loss_state or (loss_fn.state_dict() if stateful_loss else None),  # type: ignore[attr-defined]
                "torch_rng": own["torch_rng"],
                **({"ranks": ranks} if shard.world > 1 else {}),
                "world_size": shard.world,
                "step": step,
                "best": best,
                "pixels": pixels,
                "spec": getattr(model, "spec", None) and asdict(model.spec),  # type: ignore[arg-type]
                "config": asdict(cfg),
            },
            ckpt_path,
        )

    log = (out / "log.jsonl").open("a") if lead else contextlib.nullcontext()
    bar = _progress(progress and lead)
    task = bar.add_task("train", total=cfg.steps, completed=step, stats="")
    shown = ProgressStats(total=cfg.steps)  # only what is known: no loss before the first step, no val without --val
    tick, window_steps, window_pixels = time.perf_counter(), 0, 0
    train_mode(model, cfg.freeze_bn)
    stop: int | None = None  # the signal that stops the run, once every rank knows of it
    with bar, log, StopSignals() as signals:
        try:
            while step < cfg.steps and stop is None and not (shard.world == 1 and signals.received):
                before = batches.state_dict()  # type: ignore[attr-defined]
                loss_before = loss_fn.state_dict() if stateful_loss else None  # type: ignore[attr-defined]
                batch = next(batches).to(device)
                if cfg.channels_last:
                    batch.noisy = batch.noisy.contiguous(memory_format=torch.channels_last)
                loss, logs = optimizer_step(forward, loss_fn, batch, optimizer, scaler, amp)
                scheduler.step()
                if average is not None:
                    average.update(model, step)
                step += 1
                before, loss_before = None, None
                batch_pixels = batch.noisy.shape[0] * batch.noisy.shape[-2] * batch.noisy.shape[-1] * shard.world
                pixels += batch_pixels
                window_steps, window_pixels = window_steps + 1, window_pixels + batch_pixels
                value, stop = agree(loss.detach(), signals.received, shard)
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss became {value} at step {step}; lower --lr or use --amp off")
                row: dict[str, Any] = {}
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    steps_per_s, mpx_per_s = window_steps / (now - tick), window_pixels / (now - tick) / 1e6
                    tick, window_steps, window_pixels = now, 0, 0
                    row = {
                        "step": step, "loss": value, "lr": scheduler.get_last_lr()[0], "steps_per_s": steps_per_s,
                        "mpx_per_s": mpx_per_s, "gpx_seen": pixels / 1e9, **logs,
                    }  # fmt: skip
                    shown.timed(steps_per_s, mpx_per_s)
                if validate is not None and lead and (step % cfg.val_every == 0 or step == cfg.steps):
                    model.eval()
                    scores = validate(final)
                    train_mode(model, cfg.freeze_bn)
                    row = {"step": step, "gpx_seen": pixels / 1e9, **row, **{f"val_{k}": v for k, v in scores.items()}}
                    if scores.get("psnr", -math.inf) > best:
                        best = scores["psnr"]
                        save_weights(final, out / "best.safetensors", {"step": step, "val_psnr": best})  # type: ignore[arg-type]
                    shown.psnr = scores.get("psnr")
                    tick = time.perf_counter()  # validation time is not training throughput
                if row and lead:
                    row |= {"world_size": shard.world} if shard.world > 1 else {}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                shown.step, shown.loss = step, value
                bar.update(task, completed=step, stats=shown.text())
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    checkpoint()
        except KeyboardInterrupt:
            # Ctrl-C outside the handlers (another thread): save the last completed step, with the batch source as it
            # was before the unfinished step drew. With several ranks the others are not here to hand over their
            # states: the last periodic checkpoint stands.
            if shard.world == 1:
                checkpoint(before, loss_before)
            raise TrainingStopped(signal.SIGINT, step) from None  # the caller says so, once
        stop = stop if shard.world > 1 else signals.received  # one process: also a signal that came after agree()
        if stop is not None:
            checkpoint()
            distributed.barrier(shard)  # no rank leaves (torchrun then stops the others) before rank 0 has written
            raise TrainingStopped(stop, step)
    model.eval()
    return final


def agree(loss: Tensor, received: int | None, shard: distributed.Shard) -> tuple[float, int | None]:
    """The step's loss averaged over the ranks, and the signal that stops the run if any rank received one: every rank
    leaves the loop after the same step (one small all-reduce per step)."""
    if shard.world == 1:
        return loss.item(), received
    import torch.distributed as dist

    seen = [torch.tensor(float(received == s), dtype=torch.float64, device=loss.device) for s in STOPS]
    flags = torch.stack([loss.double(), *seen])
    dist.all_reduce(flags)
    value, *counts = flags.tolist()
    return value / shard.world, next((s for s, n in zip(STOPS, counts) if n > 0), None)


STOPS = (signal.SIGTERM, signal.SIGINT)


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}", markup=False),
        TimeElapsedColumn(),
        disable=not enabled,
    )


@dataclass
class ProgressStats:
    """The training bar's numbers, each shown once known; the ETA from a moving average of the step rate, so one slow
    window (validation, a checkpoint, other load) moves it a little instead of making it jump."""

    total: int
    step: int = 0
    loss: float | None = None
    psnr: float | None = None
    rate: float | None = None  # steps/s, exponential moving average over the logged windows
    mpx: float | None = None
    smoothing: float = 0.2  # weight of the newest window

    def timed(self, steps_per_s: float, mpx_per_s: float) -> None:
        keep = 1.0 - self.smoothing
        self.rate = steps_per_s if self.rate is None else keep * self.rate + self.smoothing * steps_per_s
        self.mpx = mpx_per_s if self.mpx is None else keep * self.mpx + self.smoothing * mpx_per_s

    def eta(self) -> float | None:
        return (self.total - self.step) / self.rate if self.rate else None

    def text(self) -> str:
        parts = [] if self.loss is None else [f"loss {self.loss:.2e}"]
        if self.psnr is not None:
            parts.append(f"val {self.psnr:.2f} dB")
        if self.rate is not None and self.mpx is not None:
            parts.append(f"{self.rate:.2f} it/s  {self.mpx:.3f} Mpx/s")
        eta = self.eta()
        if eta is not None:
            minutes, seconds = divmod(round(eta), 60)
            parts.append(f"ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}")
        return "  ".join(parts)


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

    init: start from these weights (fine-tuning, e.g. the MSE control of a joint run on the same photos).
    Under torchrun every process trains one share of the global batch (DDP: gloo on CPUs, nccl on GPUs)."""
    shard = distributed.shard_from_env()
    device = resolve_device(distributed.shard_device(cfg.device, shard))
    with distributed.process_group(shard, "nccl" if device.type == "cuda" else "gloo"):
        shard = distributed.group_shard()
        cfg = distributed.from_rank0(lambda: cfg, shard)  # rank 0's settings (a resumed run's, read from its folder)
        return _train_denoiser(cfg, progress, init, shard)


def _train_denoiser(cfg: TrainConfig, progress: bool, init: str | None, shard: distributed.Shard) -> Denoiser:
    paths = folder_images(Path(cfg.data))
    images = [load_rgb(p) for p in paths]
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    model = Denoiser(DenoiserSpec(**cfg.spec))
    if init is not None:
        start = load_denoiser(Path(init))
        if start.spec != model.spec:
            raise ValueError(f"{init}: its architecture {asdict(start.spec)} differs from train.spec {cfg.spec}")
        model.load_state_dict(start.state_dict())
    batch, seed = distributed.rank_batch(cfg.batch, shard), distributed.rank_seed(cfg.seed, shard)
    sampler = PatchSampler(images, cfg.patch, batch, cfg.sigma, seed, names=[str(p) for p in paths])
    val_sigma = cfg.val_sigma if cfg.val_sigma is not None else sum(cfg.sigma) / 2
    validate = psnr_validator(Path(cfg.val), val_sigma, cfg.val_images) if cfg.val and shard.rank == 0 else None
    trained = fit(model, LOSSES[cfg.loss], sampler, cfg, validate, progress)
    if shard.rank == 0:
        card = {"config": asdict(replace(cfg, world_size=shard.world)), "init": init}
        save_weights(trained.cpu(), Path(cfg.out) / "model.safetensors", card)  # type: ignore[arg-type]
    return trained  # type: ignore[return-value]

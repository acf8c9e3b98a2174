"""What a training checkpoint holds and how `fit` builds, steps, saves and restores it: the model, its weight
average, the optimizer, LR schedule and grad scaler, the step count, best validation PSNR and pixels seen."""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from fastdenoise import distributed
from fastdenoise.files import atomic_write, open_own
from fastdenoise.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fastdenoise.training.config import TrainConfig, check_run_folder, lr_factor
from fastdenoise.training.losses import LossFn
from fastdenoise.training.samplers import Batch


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


@dataclass
class TrainState:
    """Everything of a run that last.pt keeps besides the batch source's and the RNG's streams."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    average: WeightAverage | None
    step: int = 0
    best: float = -math.inf
    pixels: int = 0

    @property
    def final(self) -> nn.Module:
        """What training returns and validation scores: the weight average when there is one."""
        return self.average.model if self.average is not None else self.model


def start_output(cfg: TrainConfig, device: torch.device, shard: distributed.Shard) -> TrainConfig:
    """Check the run's settings against the device and the ranks; rank 0 clears the output folder of half-written
    files and writes config.json. Returns cfg with the world size of this run."""
    if cfg.sync_bn and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA devices: torch has no SyncBatchNorm on the CPU")
    distributed.rank_batch(cfg.batch, shard)  # refuse a global batch the ranks cannot share equally
    cfg = replace(cfg, world_size=shard.world)
    out = Path(cfg.out)
    if shard.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for leftover in out.glob(".*.part"):  # temporary files of a process that was killed while writing
            leftover.unlink(missing_ok=True)
        text = json.dumps(asdict(cfg), indent=2).encode()
        atomic_write(out / "config.json", lambda handle: handle.write(text))  # a link planted there is replaced
    return cfg


def open_log(out: Path) -> IO[str]:
    """OUT/log.jsonl opened to append rows, never through a link planted at its name (ValueError naming it)."""
    return open(open_own(out / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")


def build_state(
    model: nn.Module, cfg: TrainConfig, device: torch.device, amp: torch.dtype | None, world: int
) -> TrainState:
    """The model on its device (SyncBatchNorm across `world` ranks if asked), Adam over its trainable parameters, the
    LR schedule, the grad scaler (on for fp16 only) and the weight average when cfg.ema is on."""
    if cfg.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    return TrainState(model, optimizer, scheduler, scaler, average)


def stateful(loss_fn: Any) -> Any:
    """The loss if it keeps a state a checkpoint must hold (a balanced JointLoss), else None."""
    return loss_fn if hasattr(loss_fn, "state_dict") and hasattr(loss_fn, "load_state_dict") else None


# What restore and restore_streams read from last.pt: entry -> (its types, what a message calls them, required)
ENTRIES: dict[str, tuple[Any, str, bool]] = {
    "model": (dict, "a dict", True),
    "optimizer": (dict, "a dict", True),
    "scheduler": (dict, "a dict", True),
    "scaler": (dict, "a dict", True),
    "batches": (dict, "a dict", True),
    "torch_rng": (Tensor, "a tensor", True),
    "step": (int, "an int", True),
    "best": ((int, float), "a number", True),
    "pixels": (int, "an int", False),
    "ema": ((dict, type(None)), "a dict", False),
    "loss": ((dict, type(None)), "a dict", False),
    "ranks": (list, "a list", False),
}


def saved_run(path: Path, shard: distributed.Shard, resume: bool = False) -> dict | None:
    """The checkpoint at path, checked (`check_saved`), if there is one: rank 0 reads it and hands it to the others.
    Without `resume`, one there is refused (`check_run_folder`): a run is continued only when asked to."""

    def read() -> dict | None:
        check_run_folder(path.parent, resume)
        return check_saved(load_checkpoint(path), path) if path.exists() else None

    return distributed.from_rank0(read, shard)


def check_saved(saved: Any, path: Path) -> dict:
    """saved, if it holds every entry `restore` reads, of its type, at a step its LR schedule reached; else
    CheckpointError naming path and the reason (a damaged or tampered file is refused before any work)."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: cannot resume: a {type(saved).__name__}, not a training checkpoint")
    for key, (kinds, name, required) in ENTRIES.items():
        if key not in saved and not required:
            continue
        if key not in saved:
            raise CheckpointError(f"{path}: cannot resume: no {key!r} entry")
        if not isinstance(saved[key], kinds) or isinstance(saved[key], bool):
            raise CheckpointError(f"{path}: cannot resume: its {key!r} is a {type(saved[key]).__name__}, not {name}")
    reached = saved["scheduler"].get("last_epoch")  # LambdaLR steps once per optimizer step
    if saved["step"] < 0 or saved["step"] != reached:
        raise CheckpointError(
            f"{path}: cannot resume: its 'step' {saved['step']} is not the step its LR schedule reached ({reached})"
        )
    return saved


def continue_run(
    state: TrainState, saved: dict, path: Path, batches: Any, loss_fn: Any, cfg: TrainConfig, rank: int
) -> None:
    """Continue the run `saved` (read from `path` by `saved_run`) on this rank; CheckpointError if it does not load."""
    state.step, state.best, state.pixels = restore(saved, path, state, cfg)
    try:
        restore_streams(saved, batches, stateful(loss_fn), rank)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        detail = str(err)[:200]
        raise CheckpointError(f"{path}: cannot resume: its sampler or RNG state does not load ({detail})") from err


def restore(saved: dict, path: Path, state: TrainState, cfg: TrainConfig) -> tuple[int, float, int]:
    """Load a checkpoint's model, weight average, optimizer, scheduler and scaler; the LR follows the settings now in
    force (--lr and --steps may change on resume). Returns the step, best validation PSNR and pixels seen."""
    optimizer, scheduler = state.optimizer, state.scheduler
    try:
        state.model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if state.average is not None:
            state.average.model.load_state_dict(saved["ema"] if saved.get("ema") is not None else saved["model"])
        scheduler.load_state_dict(saved["scheduler"])
        state.scaler.load_state_dict(saved["scaler"])
    except (KeyError, IndexError, TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot resume, it does not match this model ({str(err)[:200]})") from err
    scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = cfg.lr, cfg.lr * lr_factor(cfg)(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return saved["step"], saved["best"], saved.get("pixels", 0)


def restore_streams(saved: dict, batches: Any, loss_fn: Any, rank: int) -> None:
    """Rank r continues rank r's sampler and RNG streams of the run that saved (absent "ranks": one process); a rank
    that run did not have starts its own from the beginning, patches no rank drew yet. A stateful loss resumes too."""
    ranks = saved.get("ranks") or [{"batches": saved["batches"], "torch_rng": saved["torch_rng"]}]
    if rank < len(ranks):
        batches.load_state_dict(ranks[rank]["batches"])
        torch.set_rng_state(ranks[rank]["torch_rng"])
    if loss_fn is not None and saved.get("loss") is not None:
        loss_fn.load_state_dict(saved["loss"])


def save_state(
    state: TrainState,
    path: Path,
    batches: Any,
    loss_fn: Any,
    cfg: TrainConfig,
    shard: distributed.Shard,
    batches_state: dict | None = None,
    loss_state: dict | None = None,
) -> None:
    """Write last.pt (rank 0, atomically) with every rank's sampler and RNG state; `batches_state` / `loss_state`
    replace the current ones (a step that was interrupted after drawing its batch)."""
    own = {"batches": batches_state or batches.state_dict(), "torch_rng": torch.get_rng_state()}
    ranks = distributed.gather(own, shard)
    if shard.rank != 0:
        return
    model, average, loss_fn = state.model, state.average, stateful(loss_fn)
    save_checkpoint(
        {
            "model": model.state_dict(),
            "ema": average.model.state_dict() if average is not None else None,
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "batches": own["batches"],  # rank 0's: what a one-process resume (and older versions) read
            "loss": loss_state or (loss_fn.state_dict() if loss_fn is not None else None),
            "torch_rng": own["torch_rng"],
            **({"ranks": ranks} if shard.world > 1 else {}),
            "world_size": shard.world,
            "step": state.step,
            "best": state.best,
            "pixels": state.pixels,
            "spec": getattr(model, "spec", None) and asdict(model.spec),  # type: ignore[arg-type]
            "config": asdict(cfg),
        },
        path,
    )


def optimizer_step(
    forward: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp: torch.dtype | None,
) -> tuple[Tensor, dict[str, float]]:
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


def wrap(model: nn.Module, cfg: TrainConfig, device: torch.device, world: int) -> nn.Module:
    """What the steps call: DistributedDataParallel over `world` ranks, compiled when cfg.compile says so."""
    trained: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Built after the resume: it hands rank 0's weights and buffers to every rank, and all-reduces the gradients.
        # BN normalizes each rank's own share of the batch (running statistics: rank 0's, broadcast every step).
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    return torch.compile(trained) if use_compile else trained

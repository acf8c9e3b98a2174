"""One training loop (`fit`) for every objective: separate MSE training and joint task-aware training.

The run's settings are in train_config, what a checkpoint holds in train_state, the stop between two steps in stopping,
the losses of separate training in losses; their names used elsewhere are importable from here too."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastdenoise import distributed
from fastdenoise.devices import resolve_amp, resolve_device
from fastdenoise.images import load_rgb
from fastdenoise.metrics import psnr
from fastdenoise.models.checkpoint import load_denoiser, save_weights
from fastdenoise.models.denoiser import Denoiser, DenoiserSpec, with_noise_map
from fastdenoise.noise import add_noise, to_uint8
from fastdenoise.progress import ProgressStats, progress_bar
from fastdenoise.training.config import RESUMABLE_CHANGES, TrainConfig
from fastdenoise.training.losses import LOSSES, LossFn, mse_loss
from fastdenoise.training.samplers import Batch, PatchSampler, folder_images, jpeg_roundtrip, load_folder
from fastdenoise.training.state import (
    TrainState,
    build_state,
    continue_run,
    open_log,
    optimizer_step,
    save_state,
    saved_run,
    start_output,
    stateful,
    train_mode,
    wrap,
)
from fastdenoise.training.stopping import StopSignals, TrainingStopped, agree

# names the CLI, joint training, the benchmark, bench/ and tests import from here
__all__ = [
    "LOSSES",
    "RESUMABLE_CHANGES",
    "LossFn",
    "ProgressStats",
    "TrainConfig",
    "TrainingStopped",
    "Validate",
    "fit",
    "mse_loss",
    "optimizer_step",
    "psnr_validator",
    "train_denoiser",
]

Validate = Callable[[nn.Module], dict[str, float]]


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterator[Batch],
    cfg: TrainConfig,
    validate: Validate | None = None,
    progress: bool = True,
    resume: bool = False,
) -> nn.Module:
    """Train `model` on `loss_fn` for cfg.steps steps; checkpoints to cfg.out/last.pt and, with `resume`, continues
    from one there (without, a folder holding one is refused: ValueError).

    `batches` must expose state_dict()/load_state_dict() so a resumed run draws the same batches; a `loss_fn` that
    does too (a balanced JointLoss) is checkpointed with them, so a resumed run keeps its state. SIGINT/SIGTERM stop
    the run between two steps with a checkpoint (raising TrainingStopped), so stop + resume equals an unbroken run.
    Returns the trained model, or its weight average when cfg.ema is on.

    Inside a process group of W ranks (torchrun; `distributed.process_group`) the model is DistributedDataParallel:
    each rank draws cfg.batch / W patches from its own `batches`, gradients are averaged, and rank 0 alone validates,
    logs and writes (cfg.out need not exist elsewhere). The checkpoint keeps every rank's sampler and RNG state.
    """
    shard = distributed.group_shard()
    device = resolve_device(distributed.shard_device(cfg.device, shard))
    saved = saved_run(Path(cfg.out) / "last.pt", shard, resume)  # read and checked before anything is written
    cfg = start_output(cfg, device, shard)
    amp = resolve_amp(cfg.amp, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    state = build_state(model, cfg, device, amp, shard.world)
    if saved is not None:
        continue_run(state, saved, Path(cfg.out) / "last.pt", batches, loss_fn, cfg, shard.rank)
    loop = Loop(state, cfg, shard, wrap(state.model, cfg, device, shard.world), loss_fn, batches, device, amp, validate)
    log = open_log(Path(cfg.out)) if shard.rank == 0 else contextlib.nullcontext()
    visible = progress and shard.rank == 0
    bar = progress_bar("train", "stats", remaining=False, transient=False, markup=False, enabled=visible)
    train_mode(state.model, cfg.freeze_bn)
    with bar, log, StopSignals() as signals:
        loop.run(signals, log, bar, bar.add_task("train", total=cfg.steps, completed=state.step, stats=""))
    state.model.eval()
    return state.final


@dataclass
class Window:
    """Steps and pixels since the last logged row and when it began: the throughput a row and the bar show."""

    tick: float = field(default_factory=time.perf_counter)
    steps: int = 0
    pixels: int = 0

    def rates(self) -> tuple[float, float]:
        """Steps/s and Mpx/s of the window; a new one starts."""
        now = time.perf_counter()
        rates = self.steps / (now - self.tick), self.pixels / (now - self.tick) / 1e6
        self.tick, self.steps, self.pixels = now, 0, 0
        return rates


@dataclass
class Loop:
    """fit's steps: what they share (the state, how a step runs, validation) and what they report (rank 0 alone logs,
    validates and writes; the stop is agreed over the ranks so every rank leaves after the same step)."""

    state: TrainState
    cfg: TrainConfig
    shard: distributed.Shard
    forward: nn.Module
    loss_fn: LossFn
    batches: Iterator[Batch]
    device: torch.device
    amp: torch.dtype | None
    validate: Validate | None
    window: Window = field(default_factory=Window)
    undo: tuple[Any, Any] = (None, None)  # the batch source and loss states before the step under way drew

    def checkpoint(self, batches_state: dict | None = None, loss_state: dict | None = None) -> None:
        path = Path(self.cfg.out) / "last.pt"
        save_state(self.state, path, self.batches, self.loss_fn, self.cfg, self.shard, batches_state, loss_state)

    def run(self, signals: StopSignals, log: Any, bar: Any, task: Any) -> None:
        """Step until cfg.steps or a stop; a stop checkpoints and raises TrainingStopped."""
        state, world, stop = self.state, self.shard.world, None  # stop: the signal every rank knows of
        # the bar shows only what is known: no loss before the first step, no validation without one
        shown = ProgressStats(total=self.cfg.steps)
        try:
            while state.step < self.cfg.steps and stop is None and not (world == 1 and signals.received):
                value, logs, stop = self.step(signals.received)
                self.report(value, logs, log, shown)
                bar.update(task, completed=state.step, stats=shown.text())
                if state.step % self.cfg.ckpt_every == 0 or state.step == self.cfg.steps:
                    self.checkpoint()
        except KeyboardInterrupt:
            # Ctrl-C outside the handlers (another thread): save the last completed step, with the batch source as it
            # was before the unfinished step drew. With several ranks the others are not here to hand over their
            # states: the last periodic checkpoint stands.
            if world == 1:
                self.checkpoint(*self.undo)
            raise TrainingStopped(signal.SIGINT, state.step) from None  # the caller says so, once
        stop = stop if world > 1 else signals.received  # one process: also a signal that came after agree()
        if stop is not None:
            self.checkpoint()
            distributed.barrier(self.shard)  # no rank leaves (torchrun then stops the others) before rank 0 has written
            raise TrainingStopped(stop, state.step)

    def step(self, received: int | None) -> tuple[float, dict[str, float], int | None]:
        """One optimizer step on the next batch: the loss averaged over the ranks, its logs, and the agreed stop."""
        state, loss_fn = self.state, stateful(self.loss_fn)
        self.undo = (
            self.batches.state_dict(),  # type: ignore[attr-defined]
            loss_fn.state_dict() if loss_fn is not None else None,
        )
        batch = next(self.batches).to(self.device)
        if self.cfg.channels_last:
            batch.noisy = batch.noisy.contiguous(memory_format=torch.channels_last)
        loss, logs = optimizer_step(self.forward, self.loss_fn, batch, state.optimizer, state.scaler, self.amp)
        state.scheduler.step()
        if state.average is not None:
            state.average.update(state.model, state.step)
        state.step += 1
        self.undo = (None, None)
        batch_pixels = batch.noisy.shape[0] * batch.noisy.shape[-2] * batch.noisy.shape[-1] * self.shard.world
        state.pixels += batch_pixels
        self.window.steps, self.window.pixels = self.window.steps + 1, self.window.pixels + batch_pixels
        value, stop = agree(loss.detach(), received, self.shard)
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {state.step}; lower --lr or use --amp off")
        return value, logs, stop

    def report(self, value: float, logs: dict[str, float], log: Any, shown: ProgressStats) -> None:
        """The step's log row (every log_every steps, and with a validation), the best weights, the bar's numbers."""
        state, cfg, lead = self.state, self.cfg, self.shard.rank == 0
        step, row = state.step, {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            steps_per_s, mpx_per_s = self.window.rates()
            row = {
                "step": step,
                "loss": value,
                "lr": state.scheduler.get_last_lr()[0],
                "steps_per_s": steps_per_s,
                "mpx_per_s": mpx_per_s,
                "gpx_seen": state.pixels / 1e9,
                **logs,
            }
            shown.timed(steps_per_s, mpx_per_s)
        if self.validate is not None and lead and (step % cfg.val_every == 0 or step == cfg.steps):
            scores = self.validation()
            row = {"step": step, "gpx_seen": state.pixels / 1e9, **row, **{f"val_{k}": v for k, v in scores.items()}}
            shown.psnr = scores.get("psnr")
        if row and lead:
            row |= {"world_size": self.shard.world} if self.shard.world > 1 else {}
            log.write(json.dumps(row) + "\n")
            log.flush()
        shown.step, shown.loss = step, value

    def validation(self) -> dict[str, float]:
        """Score the final model (the weight average when on); a new best PSNR writes best.safetensors."""
        state = self.state
        state.model.eval()
        scores = self.validate(state.final)  # type: ignore[misc]
        train_mode(state.model, self.cfg.freeze_bn)
        if scores.get("psnr", -math.inf) > state.best:
            state.best = scores["psnr"]
            card = {"step": state.step, "val_psnr": state.best}
            save_weights(state.final, Path(self.cfg.out) / "best.safetensors", card)  # type: ignore[arg-type]
        self.window.tick = time.perf_counter()  # validation time is not training throughput
        return scores


def psnr_validator(folder: Path, sigma: float, limit: int, seed: int = 0, jpeg: int | None = None) -> Validate:
    """Validation on the first `limit` images of a folder: mean PSNR of the fp32 output, noise per the protocol.

    jpeg: also score the same noisy images stored as JPEG at this quality (4:2:0, as cameras do) as `jpeg_psnr`."""
    clean = load_folder(folder, limit)
    noisy = [add_noise(im, sigma, seed, i) for i, im in enumerate(clean)]
    sets = {"psnr": [torch.from_numpy(x).permute(2, 0, 1) for x in noisy]}
    if jpeg is not None:
        sets["jpeg_psnr"] = [jpeg_roundtrip(x.clamp(0, 1), jpeg) for x in sets["psnr"]]

    @torch.no_grad()
    def validate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        scores: dict[str, float] = {}
        for name, inputs in sets.items():
            outputs = (model(t[None].to(device), torch.full((1,), sigma))[0] for t in inputs)
            scores[name] = float(
                np.mean([psnr(to_uint8(y.permute(1, 2, 0).float().cpu().numpy()), im) for y, im in zip(outputs, clean)])
            )
        return scores

    return validate


def train_denoiser(cfg: TrainConfig, progress: bool = True, init: str | None = None, resume: bool = False) -> Denoiser:
    """Separate (MSE) training of a Denoiser on a folder of clean images (and cfg.extra's); writes model.safetensors to
    cfg.out.

    init: start from these weights (fine-tuning, e.g. the MSE control of a joint run on the same photos).
    resume: continue the run in cfg.out (its last.pt) where there is one; without, such a folder is refused.
    Under torchrun every process trains one share of the global batch (DDP: gloo on CPUs, nccl on GPUs)."""
    shard = distributed.shard_from_env()
    device = resolve_device(distributed.shard_device(cfg.device, shard))
    with distributed.process_group(shard, "nccl" if device.type == "cuda" else "gloo"):
        shard = distributed.group_shard()
        cfg = distributed.from_rank0(lambda: cfg, shard)  # rank 0's settings (a resumed run's, read from its folder)
        return _train_denoiser(cfg, progress, init, shard, resume)


def _train_denoiser(
    cfg: TrainConfig, progress: bool, init: str | None, shard: distributed.Shard, resume: bool
) -> Denoiser:
    paths = [path for folder in (cfg.data, *cfg.extra) for path in folder_images(Path(folder))]
    images = [load_rgb(p) for p in paths]
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    model = Denoiser(DenoiserSpec(**cfg.spec))
    if init is not None:
        start = load_denoiser(Path(init))
        if model.spec.noise_map and start.spec == replace(model.spec, noise_map=False):
            start = with_noise_map(start)  # the blind weights, the level's input at zero: step 0 is the blind model
        if start.spec != model.spec:
            raise ValueError(f"{init}: its architecture {asdict(start.spec)} differs from train.spec {cfg.spec}")
        model.load_state_dict(start.state_dict())
    batch, seed = distributed.rank_batch(cfg.batch, shard), distributed.rank_seed(cfg.seed, shard)
    sampler = PatchSampler(
        images,
        cfg.patch,
        batch,
        cfg.sigma,
        seed,
        names=[str(p) for p in paths],
        jpeg=tuple(cfg.jpeg) if cfg.jpeg else None,
        jpeg_share=cfg.jpeg_share,
        colour=cfg.colour,
        downscale=cfg.downscale,
    )
    val_sigma = cfg.val_sigma if cfg.val_sigma is not None else sum(cfg.sigma) / 2
    val_jpeg = round(sum(cfg.jpeg) / 2) if cfg.jpeg else None
    validate = (
        psnr_validator(Path(cfg.val), val_sigma, cfg.val_images, jpeg=val_jpeg) if cfg.val and shard.rank == 0 else None
    )
    trained = fit(model, LOSSES[cfg.loss], sampler, cfg, validate, progress, resume)
    if shard.rank == 0:
        card = {"config": asdict(replace(cfg, world_size=shard.world)), "init": init}
        save_weights(trained.cpu(), Path(cfg.out) / "model.safetensors", card)  # type: ignore[arg-type]
    return trained  # type: ignore[return-value]

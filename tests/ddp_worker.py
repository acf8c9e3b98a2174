"""What each process of the data-parallel tests runs (a module of its own: spawned processes import it by name)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from helpers import SMALL, randomize_bn
from torch import nn

from fastdenoise.distributed import Shard, rank_seed
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.training.fit import TrainConfig, fit
from fastdenoise.training.samplers import Batch, PatchSampler

PATCH, BATCH, SIGMA, SEED = 16, 4, (10.0, 40.0), 3


class FrozenBNDenoiser(Denoiser):
    """BN normalizes with its running statistics even in training, so every sample's gradient is its own and a
    W-rank step equals one step on the whole batch exactly (per-rank batch statistics would make them differ)."""

    def train(self, mode: bool = True) -> FrozenBNDenoiser:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self


class Double:
    """A sampler's batches in float64, so that the comparison is not at the mercy of fp32 summation order."""

    def __init__(self, sampler: PatchSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Double:
        return self

    def __next__(self) -> Batch:
        b = next(self.sampler)
        return Batch(b.noisy.double(), b.clean.double())

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class Joined:
    """The concatenation of several ranks' batches: one process seeing exactly the global batch the ranks saw."""

    def __init__(self, parts: list[Double]) -> None:
        self.parts = parts

    def __iter__(self) -> Joined:
        return self

    def __next__(self) -> Batch:
        got = [next(p) for p in self.parts]
        return Batch(torch.cat([b.noisy for b in got]), torch.cat([b.clean for b in got]))

    def state_dict(self) -> dict:
        return {"parts": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        for part, s in zip(self.parts, state["parts"]):
            part.load_state_dict(s)


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, size=(28 + 4 * i, 36, 3), dtype=np.uint8) for i in range(3)]


def model() -> FrozenBNDenoiser:
    torch.manual_seed(SEED)
    return randomize_bn(FrozenBNDenoiser(SMALL)).double()


def config(out: Path, steps: int) -> TrainConfig:
    return TrainConfig(
        data=".",
        out=str(out),
        patch=PATCH,
        batch=BATCH,
        steps=steps,
        lr=1e-2,
        warmup=1,
        ckpt_every=steps,
        log_every=1,
        seed=SEED,
        device="cpu",
        amp="off",
        compile="off",
        channels_last=False,
        spec=asdict(SMALL),
    )


def rank_batches(shard: Shard) -> Double:
    return Double(PatchSampler(images(), PATCH, BATCH // shard.world, SIGMA, rank_seed(SEED, shard)))


def double_mse(net: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    return F.mse_loss(net(batch.noisy), batch.clean), {}


def train_rank(rank: int, world: int, init: str, out: str, steps: int) -> None:
    """One rank of a gloo group (spawned): K steps of `fit` on its own share of the global batch."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        shard = Shard(rank, world)
        fit(model(), double_mse, rank_batches(shard), config(Path(out), steps), progress=False)
    finally:
        dist.destroy_process_group()


def train_joined(out: Path, world: int, steps: int) -> nn.Module:
    """The one-process reference: the same global batches, concatenated."""
    parts = [rank_batches(Shard(r, world)) for r in range(world)]
    return fit(model(), double_mse, Joined(parts), config(out, steps), progress=False)

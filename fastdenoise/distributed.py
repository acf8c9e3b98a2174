"""Sharding a folder run over the processes torchrun starts (RANK, WORLD_SIZE, LOCAL_RANK; any number of machines):
a deterministic split of the sorted file list, one manifest part per rank, merged by rank 0 after a gloo barrier."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share of a run: every `world`-th input of the sorted listing, starting at `rank`."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank must be in 0..world-1, got rank {self.rank} of {self.world}")


def shard_from_env() -> Shard:
    """The shard torchrun gave this process (RANK / WORLD_SIZE / LOCAL_RANK); one process alone is Shard(0, 1)."""
    try:
        env = os.environ
        return Shard(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))
    except ValueError as err:
        raise ValueError(f"bad RANK / WORLD_SIZE / LOCAL_RANK in the environment: {err}") from err


def take(items: Iterable[T], shard: Shard) -> Iterator[T]:
    """Round-robin split: item i goes to rank i % world. Every rank lists the same sorted tree, so the shards
    partition it exactly and balance to within one item."""
    for i, item in enumerate(items):
        if i % shard.world == shard.rank:
            yield item


def shard_device(device: str, shard: Shard) -> str:
    """One GPU per local rank: 'auto' or 'cuda' become cuda:<LOCAL_RANK> when sharded on a CUDA machine."""
    if shard.world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{shard.local_rank % torch.cuda.device_count()}"
    return device


@contextmanager
def process_group(shard: Shard) -> Iterator[None]:
    """A gloo group for the barrier at the end of a sharded run (no tensors move: gloo works on every machine).
    The timeout is long because ranks legitimately wait for the slowest shard."""
    if shard.world == 1:
        yield
        return
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world, timeout=timedelta(hours=6))
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_complete(shard: Shard, complete: bool) -> bool:
    """Barrier: True on every rank once all ranks are done and none of them stopped early."""
    if shard.world == 1:
        return complete
    import torch.distributed as dist

    flag = torch.tensor([int(complete)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())

"""The processes torchrun starts (RANK, WORLD_SIZE, LOCAL_RANK; any number of machines): a folder run's deterministic
split of the sorted file list (one manifest part per rank, merged by rank 0 after a gloo barrier), and data-parallel
training's per-rank batch, sampler seed and the few objects rank 0 hands to the others."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
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
def process_group(shard: Shard, backend: str = "gloo") -> Iterator[None]:
    """A process group: gloo for the barrier at the end of a sharded run (no tensors move: gloo works on every
    machine), nccl for training on GPUs. The timeout is long because ranks legitimately wait for the slowest shard
    (or for rank 0's validation). Inside a group that already exists (a caller made it), nothing is done."""
    import torch.distributed as dist

    if shard.world == 1 or dist.is_initialized():
        yield
        return
    if backend == "nccl":
        torch.cuda.set_device(shard.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend, rank=shard.rank, world_size=shard.world, timeout=timedelta(hours=6))
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


def group_shard() -> Shard:
    """This process's place in the process group it runs in (Shard() when there is none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Shard()
    return Shard(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_batch(batch: int, shard: Shard) -> int:
    """Each rank's share of the global batch, so that the global batch (and the LR schedule) is a one-process run's."""
    if batch % shard.world:
        raise ValueError(f"--batch {batch} is the global batch: it must be a multiple of the {shard.world} processes")
    return batch // shard.world


def rank_seed(seed: int, shard: Shard) -> int:
    """Rank r's sampler seed: rank 0 keeps `seed` (one process draws what it always drew), the others streams of
    their own (seeds 2^32 apart, so no two ranks of runs with small seeds share one)."""
    return seed + (shard.rank << 32)


def from_rank0(make: Callable[[], T], shard: Shard) -> T:
    """make() on rank 0 alone; its result, or the exception it raised, handed to every rank (a pickle over the
    group)."""
    if shard.world == 1:
        return make()
    import torch.distributed as dist

    box: list = [None]
    if shard.rank == 0:
        try:
            box = [(True, make())]
        except Exception as err:  # noqa: BLE001 - every rank raises it, so none waits for a partner that left
            box = [(False, err)]
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def gather(value: T, shard: Shard) -> list[T]:
    """Every rank's `value`, in rank order, on every rank (small objects: sampler and RNG states)."""
    if shard.world == 1:
        return [value]
    import torch.distributed as dist

    values: list = [None] * shard.world
    dist.all_gather_object(values, value)
    return values


def barrier(shard: Shard) -> None:
    """Wait until every rank is here."""
    if shard.world > 1:
        import torch.distributed as dist

        dist.barrier()

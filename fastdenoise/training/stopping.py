"""How a training run stops between two steps: SIGINT/SIGTERM only flag the loop, every rank agrees on the step."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch
from torch import Tensor

from fastdenoise import distributed

STOPS = (signal.SIGTERM, signal.SIGINT)


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

"""A backend that hands its input back: `fastdenoise run` with it times the host side alone (listing, decode, batching,
encode, manifest; bench/host_pipeline.py) and writes each input's own pixels."""

from __future__ import annotations

import torch
from torch import Tensor


class NullBackend:
    """(N, 3, H, W) float batch -> the same tensor: no model, so a run's rate is what the host sustains."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def __call__(self, x: Tensor) -> Tensor:
        return x

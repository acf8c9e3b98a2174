"""Backends that hand their input back: `fastdenoise run` with one times the host side alone (listing, decode,
batching, encode, manifest; bench/host_pipeline.py) and writes each input's own pixels."""

from __future__ import annotations

import torch
from torch import Tensor


class FloatNullBackend:
    """(N, 3, H, W) float batch -> the same tensor: the run still converts to float and back (on the device: a GPU's
    work, the CPU's here), as for a model."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def __call__(self, x: Tensor) -> Tensor:
        return x


class NullBackend(FloatNullBackend):
    """Also takes bytes (`inference.ByteBackend`): (N, H, W, 3) uint8 -> the same tensor, so a run's rate is what the
    host alone sustains (on a GPU host the float round trip is the device's work)."""

    def denoise_uint8(self, batch: Tensor) -> Tensor:
        return batch

"""The reconstruction losses of separate training, as `fit` takes them: loss_fn(model, batch) -> (loss, logs)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.choices import Loss
from fastdenoise.training.samplers import Batch

LossFn = Callable[[nn.Module, Batch], tuple[Tensor, dict[str, float]]]


def mse_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """The separate objective: MSE between D(noisy) and clean."""
    loss = F.mse_loss(model(batch.noisy, batch.sigma).float(), batch.clean)
    return loss, {"mse": loss.item()}


def l1_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """Mean absolute error; MSE is logged beside it so arms compare on one scale."""
    out = model(batch.noisy, batch.sigma).float()
    loss = F.l1_loss(out, batch.clean)
    return loss, {"mse": F.mse_loss(out.detach(), batch.clean).item()}


def charbonnier_loss(model: nn.Module, batch: Batch, eps: float = 1e-3) -> tuple[Tensor, dict[str, float]]:
    """sqrt(d^2 + eps^2), a differentiable L1 (eps = 1e-3 on [0, 1] pixels, a quarter of one 8-bit level)."""
    out = model(batch.noisy, batch.sigma).float()
    loss = torch.sqrt((out - batch.clean).square() + eps * eps).mean()
    return loss, {"mse": F.mse_loss(out.detach(), batch.clean).item()}


LOSSES: dict[str, LossFn] = {Loss.mse: mse_loss, Loss.l1: l1_loss, Loss.charbonnier: charbonnier_loss}

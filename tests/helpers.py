"""Small shared test helpers (importable: pytest puts tests/ on sys.path)."""

import torch

from fastdenoise.model import DenoiserSpec

SMALL = DenoiserSpec(c0=8, c1=12, c2=12, mid=4, up2=4, c3=16, mid3=8, up1=8)


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, as after training."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()

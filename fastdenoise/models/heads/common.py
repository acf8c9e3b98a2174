"""What every head shares: strict weight loading with readable errors, input normalisation, ImageNet class names."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from fastdenoise.models.checkpoint import CheckpointError, key_mismatch, load_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PASCAL VOC's 21 classes in their index order (the VOC heads' outputs)
VOC_CLASSES = tuple(
    "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person "
    "pottedplant sheep sofa train tvmonitor".split()
)


class Normalize(nn.Module):
    """(x - mean) / std per channel, x in [0, 1] RGB; kept as buffers so it moves with the head."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def load_strict(model: nn.Module, path: Path) -> nn.Module:
    """Load a state-dict file into `model`, every key and shape matching; CheckpointError names the file otherwise."""
    state = load_checkpoint(Path(path))
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return load_state(model, state, str(path))


def load_state(model: nn.Module, state: dict, source: str) -> nn.Module:
    """`load_state_dict(strict=True)` with a one-line CheckpointError listing missing, unexpected and misshapen keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        detail = key_mismatch(missing, unexpected, wrong)
        raise CheckpointError(f"{source}: weights do not fit {type(model).__name__} ({detail})")
    model.load_state_dict(state, strict=True)
    return model.eval()


@cache
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(synsets, names) of the 1000 ImageNet-1k classes, index = position of the synset in sorted order."""
    text = (resources.files("fastdenoise.models.heads") / "imagenet_classes.txt").read_text()
    rows = [line.split(" ", 1) for line in text.splitlines() if line]
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows)

"""Any torchvision classifier or segmenter as a head; torchvision is imported only here, only when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from fastdenoise.models.checkpoint import load_checkpoint
from fastdenoise.models.heads.common import IMAGENET_MEAN, IMAGENET_STD, Normalize, imagenet_classes, load_state

VOC_CLASSES_COUNT = 21  # torchvision's segmentation weights predict the 20 Pascal VOC classes + background


class TorchvisionHead(nn.Module):
    """[0, 1] RGB -> logits of a torchvision model, ImageNet mean/std applied here; segmenters return their "out"."""

    def __init__(self, net: nn.Module, task: str, num_classes: int, class_names: tuple[str, ...] | None) -> None:
        super().__init__()
        self.net, self.task, self.num_classes, self.class_names = net, task, num_classes, class_names
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(self.normalize(x))
        return out["out"] if self.task == "segment" else out  # segmenters already upsample to the input size


def import_torchvision() -> Any:
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(
            "torchvision:<model> heads need torchvision: pip install torchvision (matching your torch)"
        ) from err
    return torchvision


def torchvision_head(name: str, weights: Path | None = None, pretrained: bool = True) -> TorchvisionHead:
    """torchvision model `name` (e.g. resnet50, deeplabv3_resnet50) in eval mode.

    weights None and pretrained: torchvision's DEFAULT weights (downloaded to its cache); a path: a state dict for the
    model (auxiliary-classifier keys are ignored); pretrained False: random init.
    """
    models = import_torchvision().models
    segmenters = set(models.list_models(module=models.segmentation))
    classifiers = set(models.list_models(module=models)) - segmenters
    if name not in segmenters | classifiers:
        raise ValueError(
            f"torchvision has no classifier or segmenter named {name!r}; see torchvision.models.list_models()"
        )
    task = "segment" if name in segmenters else "classify"
    tv_weights = models.get_model_weights(name).DEFAULT if pretrained and weights is None else None
    extra = {"weights_backbone": None} if task == "segment" and tv_weights is None else {}
    net = models.get_model(name, weights=tv_weights, **extra)
    if weights is not None:
        state = {k: v for k, v in load_checkpoint(Path(weights)).items() if not k.startswith("aux_classifier.")}
        load_state(net, state, str(weights))
    if tv_weights is not None:
        names = tuple(tv_weights.meta["categories"])
    else:
        names = imagenet_classes()[1] if task == "classify" else None
    count = len(names) if names is not None else VOC_CLASSES_COUNT
    return TorchvisionHead(net, task, count, names).eval()

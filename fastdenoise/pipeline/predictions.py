"""A frozen head on the denoised images of a folder run (`fastdenoise run --task`): each image's top-k classes (kept in
its manifest row, gathered into predictions.csv at the end) or its segmentation label map (a palette PNG mask)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.choices import Task, values
from fastdenoise.models.heads.geometry import classifier_geometry
from fastdenoise.pipeline.manifest import MANIFEST, read_lines
from fastdenoise.pipeline.writers import PredictionWriter, top_k

MASK_SUFFIX = ".mask.png"  # OUTPUT/<input's relative path, extension replaced by this>
PREDICTIONS = "predictions.csv"


@dataclass(frozen=True)
class TaskConfig:
    """Options of `fastdenoise run --task`: which head runs on the denoised images, and how many classes are kept."""

    task: str = "classify"
    head: str | None = None  # default: DEFAULT_HEADS[task]
    head_weights: str | None = None  # default: the head's own (load_head)
    top_k: int = 5

    def __post_init__(self) -> None:
        if self.task not in values(Task):
            raise ValueError(f"task must be one of {list(values(Task))}, got {self.task!r}")
        if self.top_k < 1:
            raise ValueError(f"top-k must be >= 1, got {self.top_k}")

    @property
    def head_name(self) -> str:
        from fastdenoise.models.heads import DEFAULT_HEADS  # the heads package only where a head runs

        return self.head or DEFAULT_HEADS[Task(self.task)]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One image's prediction: its ranked [class, label, probability] list, or its (H, W) uint8 label map."""

    top: list[list] | None = None
    labels: np.ndarray | None = None


def classifier_input(x: Tensor, short_side: int, crop: int) -> Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, crop, crop): short side resized (bicubic, antialiased, as Pillow does for
    `tables`), then the central window (the odd pixel goes to the bottom/right margin, as
    `heads.geometry.centre_crop`)."""
    h, w = x.shape[-2:]
    scale = short_side / min(h, w)
    size = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
    return x[..., top : top + crop, left : left + crop]


class Predictor:
    """A frozen head on batches of denoised images: (N, 3, H, W) in [0, 1] -> one `Prediction` per image.

    `key` names the head (and top-k) in manifest rows: a later run with another head redoes the image."""

    def __init__(
        self, head: nn.Module, task: str, top_k: int = 5, name: str | None = None, device: torch.device | str = "cpu"
    ) -> None:
        name = name or type(head).__name__
        head_task = getattr(head, "task", None)
        if head_task != task:
            raise ValueError(f"head {name!r} is a {head_task or 'task-less'} head; --task {task} needs a {task} head")
        if task == "segment" and head.num_classes > 256:
            raise ValueError(f"head {name!r} has {head.num_classes} classes; a palette PNG mask holds at most 256")
        self.device = torch.device(device)
        self.head, self.task, self.top_k, self.name = head.eval().to(self.device), task, top_k, name
        self.class_names = getattr(head, "class_names", None)
        self.palette = getattr(head, "palette", None)  # segment: the masks' colours (None: the writer's default)
        self.geometry = classifier_geometry(head) if task == "classify" else None
        self.key = f"{task} {name}" + (f" top-{top_k}" if task == "classify" else "")

    def label(self, index: int) -> str:
        names = self.class_names
        return str(names[index]) if names is not None and index < len(names) else str(index)

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> list[Prediction]:
        x = x.to(self.device)
        if self.geometry is None:  # segment: the whole image, logits (N, C, H, W) at its size
            labels = self.head(x).argmax(1).to(torch.uint8).cpu().numpy()
            return [Prediction(labels=m) for m in labels]
        logits = self.head(classifier_input(x, *self.geometry)).float().cpu().numpy()  # (N, C)
        classes, probs = top_k(logits, self.top_k)
        return [
            Prediction(top=[[int(c), self.label(int(c)), round(float(p), 6)] for c, p in zip(cs, ps)])
            for cs, ps in zip(classes, probs)
        ]


def load_predictor(cfg: TaskConfig, device: torch.device | str = "cpu") -> Predictor:
    """The configured head by name (see `heads.load_head`), checked against the task, on `device`."""
    from fastdenoise.models.heads import load_head

    weights = Path(cfg.head_weights) if cfg.head_weights else None
    head = load_head(cfg.head_name, weights)
    name = cfg.head_name + (f" ({weights.name})" if weights else "")
    return Predictor(head, cfg.task, cfg.top_k, name, device)


def write_predictions(dst: Path, key: str) -> tuple[Path, int]:
    """OUTPUT/predictions.csv from the merged manifest (rows of `key`'s head): input, rank, class, label, probability;
    one row per input and rank, sorted by input; written whole or not at all. Returns the path and the inputs in it."""
    found = [
        (row["input"], json.dumps(row["top"], ensure_ascii=False))  # JSON text: a tenth of the memory of nested lists
        for _, row in read_lines(Path(dst) / MANIFEST)
        if row.get("status") in ("ok", "skipped") and row.get("head") == key and row.get("top")
    ]
    found.sort()
    path = Path(dst) / PREDICTIONS
    with PredictionWriter(path) as writer:
        for name, top in found:
            writer.write_top(name, json.loads(top))
    return path, len(found)

"""Joint (task-aware) training of Liu et al.: L = MSE(D(x), clean) + lam * task_loss(H(D(x)), target), H frozen.

The loss is handed to the same `train.fit` as separate training. Targets are ground truth (class folders, a
`file,index` CSV, or mask folders) or label-free: the frozen head's own prediction on the clean crop.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.checkpoint import load_denoiser, save_weights
from fastdenoise.data import Batch
from fastdenoise.heads import TORCHVISION, head_names, load_head
from fastdenoise.images import list_images, load_rgb
from fastdenoise.model import Denoiser, DenoiserSpec
from fastdenoise.train import LossFn, TrainConfig, fit, psnr_validator, resolve_device


class Task(Enum):
    CLASSIFY = "classify"
    SEGMENT = "segment"


class Target(Enum):
    """Where the task loss gets its target from."""

    LABELS = "labels"  # ground truth
    ARGMAX = "argmax"  # label-free: cross-entropy to H(clean).argmax
    SOFTMAX = "softmax"  # label-free: KL(softmax H(clean) || softmax H(D(noisy)))


def default_lam(task: Task) -> float:
    """The paper's weights: 0.25 for classification, 0.5 for segmentation."""
    return 0.25 if task is Task.CLASSIFY else 0.5


def default_crop(task: Task) -> int:
    """Crop side for a task's head: 224 (ImageNet eval size) or 256."""
    return 224 if task is Task.CLASSIFY else 256


@dataclass(frozen=True)
class JointConfig:
    """The options of `fastdenoise train --task ...` beyond TrainConfig (whose `patch` is the crop side)."""

    train: TrainConfig
    task: str = "classify"
    head: str = "efficientnet-lite0"
    head_weights: str | None = None
    lam: float | None = None  # None: default_lam(task)
    target: str = "labels"  # labels | argmax | softmax
    labels: str | None = None  # classify + labels: CSV `file,index` (paths relative to train.data); None: class folders
    masks: str | None = None  # segment + labels: folder of masks named like the images (any extension)
    ignore_index: int = 255  # segment: mask value without a class (CamVid: 11)
    resize: int | None = None  # short side images are resized to before cropping; None: classify 8/7 crop, segment as is
    init: str | None = None  # denoiser weights to start from (.safetensors or .pt); None: random init

    def __post_init__(self) -> None:
        tasks, targets = [t.value for t in Task], [t.value for t in Target]
        if self.task not in tasks:
            raise ValueError(f"task must be one of {', '.join(tasks)}; got {self.task!r}")
        if self.target not in targets:
            raise ValueError(f"target must be one of {', '.join(targets)}; got {self.target!r}")
        if not self.head.startswith(TORCHVISION) and self.head not in head_names():
            raise ValueError(f"head must be one of {', '.join(head_names())}; got {self.head!r}")
        if self.lam is not None and not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not 0 <= self.ignore_index <= 255:
            raise ValueError(f"ignore_index must be in 0..255 (a mask value), got {self.ignore_index}")
        if self.resize is not None and self.resize < self.train.patch:
            raise ValueError(f"resize ({self.resize}) must be >= the crop side, patch ({self.train.patch})")
        labelled = self.target == Target.LABELS.value
        if self.labels is not None and not (labelled and self.task == Task.CLASSIFY.value):
            raise ValueError("labels (a CSV file) is for --task classify --target labels only")
        if self.task == Task.SEGMENT.value and labelled and self.masks is None:
            raise ValueError("segmentation with --target labels needs masks (a folder); or use --target argmax|softmax")
        if self.masks is not None and not (labelled and self.task == Task.SEGMENT.value):
            raise ValueError("masks is for --task segment --target labels only")

    @property
    def task_weight(self) -> float:
        return self.lam if self.lam is not None else default_lam(Task(self.task))

    @property
    def short_side(self) -> int | None:
        if self.resize is not None or self.task == Task.SEGMENT.value:
            return self.resize
        return round(self.train.patch * 8 / 7)  # 224 -> 256


# ---- the objective -------------------------------------------------------------------------------------------------


def freeze(head: nn.Module) -> nn.Module:
    """Eval mode (BN statistics fixed) and no parameter gradients; `fit` never sees it, so no optimizer does."""
    head.eval()
    head.requires_grad_(False)
    return head


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean CE over targets != ignore_index; 0 (not NaN) when a crop holds only ignored pixels."""
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / (target != ignore_index).sum().clamp(min=1)


def soft_cross_entropy(logits: Tensor, reference: Tensor) -> Tensor:
    """KL(softmax(reference) || softmax(logits)) summed over classes (dim 1), mean over samples and pixels."""
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(reference, 1), reduction="none", log_target=True)
    return kl.sum(1).mean()


def joint_loss(head: nn.Module, lam: float, target: Target = Target.LABELS, ignore_index: int = 255) -> LossFn:
    """loss_fn(model, batch) for `fit`: MSE(D(noisy), clean) + lam * task loss of the frozen head on D(noisy)."""
    if head.training or any(p.requires_grad for p in head.parameters()):
        raise ValueError("the head must be frozen (fastdenoise.joint.freeze) so that only the denoiser learns")
    ignore = ignore_index if head.task == Task.SEGMENT.value else -100  # 255 is a real ImageNet class

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        out = model(batch.noisy)
        mse = F.mse_loss(out.float(), batch.clean)
        logits = head(out).float()  # (N, C) or (N, C, H, W); gradients reach D through the frozen head
        if target is Target.LABELS:
            if batch.target is None:
                raise ValueError("target mode 'labels' but the batch has no target; use a labelled sampler")
            task = cross_entropy(logits, batch.target, ignore)
        else:
            with torch.no_grad():
                reference = head(batch.clean).float()
            task = cross_entropy(logits, reference.argmax(1)) if target is Target.ARGMAX else soft_cross_entropy(logits, reference)
        return mse + lam * task, {"mse": mse.item(), "task": task.item()}

    return loss_fn


# ---- batches -------------------------------------------------------------------------------------------------------


class CropSampler:
    """Infinite iterator of Batch(noisy, clean, target) crops for a head; like data.PatchSampler its whole state is
    one torch.Generator. Random crop position, random horizontal flip (no rotations: heads know which way is up),
    sigma uniform in the range per sample, noise drawn on the fly. target: (N,) labels, (N, P, P) masks or None."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        crop: int,
        batch: int,
        sigma: tuple[float, float],
        seed: int,
        labels: Sequence[int] | None = None,
        masks: Sequence[np.ndarray] | None = None,
    ) -> None:
        if labels is not None and masks is not None:
            raise ValueError("give labels (classification) or masks (segmentation), not both")
        for name, items in (("labels", labels), ("masks", masks)):
            if items is not None and len(items) != len(images):
                raise ValueError(f"{len(images)} images but {len(items)} {name}")
        small = [i for i, im in enumerate(images) if min(im.shape[:2]) < crop]
        if small:
            raise ValueError(f"{len(small)} images are smaller than the {crop}px crop (first: index {small[0]})")
        if masks is not None and any(m.shape != im.shape[:2] for m, im in zip(masks, images)):
            raise ValueError("every mask must have its image's height and width")
        self.images, self.crop, self.batch, self.sigma = images, crop, batch, sigma
        self.labels, self.masks = labels, masks
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> CropSampler:
        return self

    def __next__(self) -> Batch:
        g, p, n = self.generator, self.crop, self.batch
        picks = torch.randint(len(self.images), (n,), generator=g).tolist()
        clean = torch.empty(n, 3, p, p)
        masks = torch.empty(n, p, p, dtype=torch.long) if self.masks is not None else None
        for k, i in enumerate(picks):
            image = self.images[i]
            y = int(torch.randint(image.shape[0] - p + 1, (1,), generator=g))
            x = int(torch.randint(image.shape[1] - p + 1, (1,), generator=g))
            flip = bool(torch.randint(2, (1,), generator=g))
            crop = torch.from_numpy(image[y : y + p, x : x + p]).permute(2, 0, 1)
            clean[k] = (crop.flip(2) if flip else crop).float() / 255.0
            if masks is not None:
                mask = torch.from_numpy(self.masks[i][y : y + p, x : x + p])  # type: ignore[index]
                masks[k] = mask.flip(1) if flip else mask
        lo, hi = self.sigma
        sigma = lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g)
        noisy = clean + torch.randn(clean.shape, generator=g) * (sigma / 255.0)
        labels = torch.tensor([self.labels[i] for i in picks]) if self.labels is not None else None
        return Batch(noisy, clean, labels if labels is not None else masks)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# ---- data on disk --------------------------------------------------------------------------------------------------


def resize_short_side(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """(H, W, ...) uint8 -> short side `size`, aspect kept; bicubic (antialiased) for photos, nearest for masks."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / min(h, w)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return np.array(Image.fromarray(image).resize(new, Image.NEAREST if nearest else Image.BICUBIC))


def load_classification(root: Path, labels_csv: Path | None, num_classes: int, short_side: int | None) -> tuple[list[np.ndarray], list[int]]:
    """Images and class indices from a `file,index` CSV (files relative to root) or from class sub-folders
    (sorted folder i = class i, as torchvision's ImageFolder: all num_classes folders must be there)."""
    root = Path(root)
    if labels_csv is not None:
        with open(labels_csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or not {"file", "index"} <= set(rows[0]):
            raise ValueError(f"{labels_csv}: expected a CSV with a header 'file,index' and one row per image")
        pairs = [(root / r["file"], int(r["index"])) for r in rows]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(folders) != num_classes:
            raise ValueError(f"{root}: {len(folders)} class folders for a {num_classes}-class head; pass a labels CSV instead")
        pairs = [(path, index) for index, folder in enumerate(folders) for path in list_images(folder)]
    if not pairs:
        raise FileNotFoundError(f"{root}: no labelled images found")
    bad = [index for _, index in pairs if not 0 <= index < num_classes]
    if bad:
        raise ValueError(f"class index {bad[0]} outside 0..{num_classes - 1} of the head")
    images = [load_rgb(path) for path, _ in pairs]
    if short_side is not None:
        images = [resize_short_side(im, short_side) for im in images]
    return images, [index for _, index in pairs]


def load_segmentation(root: Path, mask_root: Path, short_side: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images and their masks (same file stem, single-channel class indices), resized alike."""
    from PIL import Image

    images_paths = list_images(Path(root))
    if not images_paths:
        raise FileNotFoundError(f"{root}: no images found")
    by_stem = {p.relative_to(mask_root).with_suffix("").as_posix(): p for p in list_images(Path(mask_root))}
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in images_paths]
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise FileNotFoundError(f"{mask_root}: no mask for {len(missing)} images (first: {missing[0]})")
    images, masks = [], []
    for path, stem in zip(images_paths, stems):
        image = load_rgb(path)
        with Image.open(by_stem[stem]) as handle:
            mask = np.array(handle)
        if mask.ndim != 2 or mask.shape != image.shape[:2]:
            raise ValueError(f"{by_stem[stem]}: mask {mask.shape} is not a single-channel {image.shape[:2]} class map")
        if short_side is not None:
            image, mask = resize_short_side(image, short_side), resize_short_side(mask, short_side, nearest=True)
        images.append(image)
        masks.append(mask.astype(np.uint8))
    return images, masks


def check_masks(masks: Sequence[np.ndarray], num_classes: int, ignore_index: int) -> None:
    """Every mask value must be a class of the head or ignore_index."""
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    bad = [int(v) for v in values if v >= num_classes and v != ignore_index]
    if bad:
        raise ValueError(f"mask values {bad} are neither classes of the {num_classes}-class head nor ignore_index ({ignore_index})")


def joint_sampler(cfg: JointConfig, head: nn.Module) -> CropSampler:
    """The CropSampler for cfg: labelled or label-free, classification or segmentation, from cfg.train.data."""
    t, data = cfg.train, Path(cfg.train.data)
    labels, masks = None, None
    if cfg.target != Target.LABELS.value:
        images = [load_rgb(p) for p in list_images(data)]
        if not images:
            raise FileNotFoundError(f"{data}: no images found")
        if cfg.short_side is not None:
            images = [resize_short_side(im, cfg.short_side) for im in images]
    elif cfg.task == Task.CLASSIFY.value:
        images, labels = load_classification(data, Path(cfg.labels) if cfg.labels else None, head.num_classes, cfg.short_side)
    else:
        images, masks = load_segmentation(data, Path(cfg.masks), cfg.short_side)  # type: ignore[arg-type]
        check_masks(masks, head.num_classes, cfg.ignore_index)
    return CropSampler(images, t.patch, t.batch, t.sigma, t.seed, labels=labels, masks=masks)


def train_joint(cfg: JointConfig, head: nn.Module | None = None, progress: bool = True) -> Denoiser:
    """Joint training of a Denoiser against a frozen head (loaded from cfg.head unless given); writes joint.json,
    and model.safetensors at the end, to cfg.train.out beside fit's checkpoints and log."""
    t = cfg.train
    head = freeze(head if head is not None else load_head(cfg.head, Path(cfg.head_weights) if cfg.head_weights else None))
    if head.task != cfg.task:
        raise ValueError(f"head {cfg.head!r} is a {head.task} network, not a {cfg.task} one")
    head.to(resolve_device(t.device))
    sampler = joint_sampler(cfg, head)
    if cfg.init is not None:
        model = load_denoiser(Path(cfg.init))
        if asdict(model.spec) != t.spec:
            raise ValueError(f"{cfg.init}: its architecture {asdict(model.spec)} differs from train.spec {t.spec}")
    else:
        model = Denoiser(DenoiserSpec(**t.spec))
    val_sigma = t.val_sigma if t.val_sigma is not None else sum(t.sigma) / 2
    validate = psnr_validator(Path(t.val), val_sigma, t.val_images) if t.val else None
    out = Path(t.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "joint.json").write_text(json.dumps(asdict(cfg), indent=2))
    loss_fn = joint_loss(head, cfg.task_weight, Target(cfg.target), cfg.ignore_index)
    trained = fit(model, loss_fn, sampler, t, validate, progress)
    save_weights(trained.cpu(), out / "model.safetensors", {"config": asdict(cfg)})  # type: ignore[arg-type]
    return trained  # type: ignore[return-value]


# ---- evaluation ----------------------------------------------------------------------------------------------------


def confusion(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """(num_classes, num_classes) counts, rows = ground truth, columns = prediction; ignored pixels left out."""
    keep = target != ignore_index
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(counts: Tensor) -> tuple[float, Tensor]:
    """(mIoU over classes present in ground truth or prediction, per-class IoU with NaN for absent classes)."""
    counts = counts.double()
    tp = counts.diag()
    union = counts.sum(0) + counts.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return float(iou.nanmean()), iou

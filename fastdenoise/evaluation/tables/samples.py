"""Table inputs one image at a time: labelled ImageNet rows and CamVid masks decoded on demand, noised per the
protocol, passed through every arm and scored by a frozen head."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fastdenoise.datasets import load_mask, read_labels
from fastdenoise.evaluation.tables.arms import CLEAN, Arm, ProgressFn, Split, split_positions
from fastdenoise.images import list_images, load_rgb
from fastdenoise.models.heads.geometry import centre_crop, resize_short_side
from fastdenoise.noise import add_noise, to_uint8
from fastdenoise.training.joint import check_masks, confusion, mean_iou
from fastdenoise.words import plural


@dataclass(frozen=True)
class Sample:
    """One image as the noise meets it: uint8 (H, W, 3); `index` i seeds its noise, [seed, i]."""

    name: str
    index: int
    image: np.ndarray
    target: int | np.ndarray  # class index, or an (H, W) mask


def write_split_labels(labels: Path, split: Split | str, out: Path) -> int:
    """Write the rows of one split of a labels CSV (e.g. the train half for `fastdenoise train --labels`); returns
    rows."""
    rows = read_labels(Path(labels))
    keep = [rows[p] for p in split_positions(len(rows), split)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "index"])
        writer.writerows(keep)
    return len(keep)


def imagenet_entries(data: Path, labels: Path, split: Split | str, limit: int | None) -> list[tuple[int, Path, int]]:
    """(noise index = row of labels.csv, file, class) of the split's first `limit` rows; nothing decoded."""
    rows = read_labels(labels)
    entries = [(p, Path(data) / rows[p][0], rows[p][1]) for p in split_positions(len(rows), split)][:limit]
    missing = [str(path) for _, path, _ in entries if not path.is_file()]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise FileNotFoundError(f"{labels}: {plural(len(missing), 'listed file')} {verb} missing (first: {missing[0]})")
    if not entries:
        raise ValueError(f"{labels}: no rows in split {Split(split).value!r}")
    return entries


def load_classification_sample(entry: tuple[int, Path, int], resize: int, crop: int) -> Sample:
    """Decode, resize the short side (PIL bicubic), centre-crop: the ImageNet evaluation preprocessing."""
    index, path, label = entry
    return Sample(path.name, index, centre_crop(resize_short_side(load_rgb(path), resize), crop), label)


def load_photo_sample(entry: tuple[int, Path, int]) -> Sample:
    """The whole photo as stored (the user's path: noise at its own size, the head's resize after the denoiser)."""
    index, path, label = entry
    return Sample(path.name, index, load_rgb(path), label)


def segmentation_entries(images: Path, masks: Path, limit: int | None) -> list[tuple[int, Path, Path]]:
    """(noise index = position in the sorted image folder, image, mask of the same stem) of the first `limit` images."""
    paths = list_images(Path(images))
    if not paths:
        raise FileNotFoundError(f"{images}: no images found")
    by_stem = {p.stem: p for p in list_images(Path(masks))}
    entries = [(i, p, by_stem.get(p.stem)) for i, p in enumerate(paths)][:limit]
    missing = [p.name for _, p, m in entries if m is None]
    if missing:
        raise FileNotFoundError(f"{masks}: no mask for {plural(len(missing), 'image')} (first: {missing[0]})")
    return entries  # type: ignore[return-value]


def load_segmentation_sample(entry: tuple[int, Path, Path]) -> Sample:
    index, path, mask_path = entry
    image = load_rgb(path)
    return Sample(path.name, index, image, load_mask(mask_path, image.shape[:2]))


def stream_masks(entries: Sequence[tuple[int, Path, Path]], num_classes: int, ignore_index: int) -> Iterator[Sample]:
    for entry in entries:
        sample = load_segmentation_sample(entry)
        check_masks([sample.target], num_classes, ignore_index)  # type: ignore[list-item]
        yield sample


def noisy_input(clean: np.ndarray, sigma: float, seed: int, index: int, quantize: bool) -> np.ndarray:
    """The noisy image every arm starts from: float32 [0, 1] + noise; quantize: clipped and rounded to 8 bits."""
    noisy = add_noise(clean, sigma, seed, index)
    return to_uint8(noisy).astype(np.float32) / 255.0 if quantize else noisy


def arm_outputs(noisy: np.ndarray, sigma: float, arms: Sequence[Arm], position: int) -> dict[str, np.ndarray]:
    """The head's uint8 input per arm running on this image and sigma: the noisy image or the denoised one, rounded."""
    return {
        a.name: to_uint8(noisy if a.denoise is None else a.denoise(noisy, sigma))
        for a in arms
        if a.runs(sigma, position)
    }


def arm_images(
    samples: Iterable[Sample],
    arms: Sequence[Arm],
    sigmas: Sequence[float],
    seed: int,
    quantize: bool,
    clean: bool = True,
) -> Iterator[tuple[int, Sample, float | None, dict[str, np.ndarray]]]:
    """Per image (and its position in the table): the clean image (sigma None) if `clean`, then per sigma every
    running arm's uint8 head input."""
    for position, sample in enumerate(samples):
        if clean:
            yield position, sample, None, {CLEAN: sample.image}
        for sigma in sigmas:
            noisy = noisy_input(sample.image, sigma, seed, sample.index, quantize)
            yield position, sample, sigma, arm_outputs(noisy, sigma, arms, position)


@torch.inference_mode()
def head_logits(head: nn.Module, images: Sequence[np.ndarray], device: torch.device, scale: float = 1.0) -> Tensor:
    """uint8 (H, W, 3) images -> the head's float logits on the CPU; segmenters: resized by `scale` for the head,
    logits bilinearly resized back to (H, W) so that scores are on the original masks."""
    size = images[0].shape[:2]
    if scale != 1.0:
        images = [resize_short_side(im, round(min(size) * scale)) for im in images]
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    logits = head(x).float()
    if logits.ndim == 4 and tuple(logits.shape[-2:]) != size:
        logits = torch.nn.functional.interpolate(logits, size, mode="bilinear", align_corners=False)
    return logits.cpu()


@torch.inference_mode()
def photo_logits(head: nn.Module, images: Sequence[np.ndarray], device: torch.device, resize: int, crop: int) -> Tensor:
    """uint8 (H, W, 3) whole photos -> the classifier's logits on the CPU, resized and cropped as `run --task
    classify` does (`predictions.classifier_input`)."""
    from fastdenoise.pipeline.predictions import classifier_input

    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    return head(classifier_input(x, resize, crop)).float().cpu()


def classification_scores(logits: Tensor, label: int, k: int = 5) -> list[dict]:
    """Per row of (N, C) logits: top1 / top5 (1 if the label is the first / among the first k) and the top-k classes."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices.tolist()
    return [{"top1": int(t[0] == label), "top5": int(label in t), "pred": t} for t in top]


def segmentation_scores(logits: Tensor, mask: np.ndarray, ignore_index: int) -> list[dict]:
    """Per (C, H, W) logits: the (C, C) confusion against the mask (ignored pixels left out), its mIoU and accuracy."""
    target = torch.from_numpy(mask.astype(np.int64))
    scores = []
    for counts in (confusion(p, target, logits.shape[1], ignore_index) for p in logits.argmax(1)):
        miou, _ = mean_iou(counts)
        scores.append({"miou": miou, "pixel_acc": pixel_accuracy(counts), "confusion": counts.numpy()})
    return scores


def pixel_accuracy(counts: Tensor | np.ndarray) -> float:
    counts = torch.as_tensor(counts).double()
    return float(counts.diag().sum() / counts.sum().clamp(min=1))


def frozen_head(
    head: nn.Module | None, name: str, weights: str | None, task: str, device: str
) -> tuple[nn.Module, torch.device]:
    """The given head, or `name` loaded, in eval mode on the device; ValueError if it does not do `task`."""
    from fastdenoise.devices import resolve_device
    from fastdenoise.models.heads import load_head

    head = head if head is not None else load_head(name, Path(weights) if weights else None)
    if head.task != task:
        raise ValueError(
            f"head {name!r} is a {head.task} network; "
            f"this table needs a {'classifier' if task == 'classify' else 'segmenter'}"
        )
    target = resolve_device(device)
    return head.eval().to(target), target


def score_stream(
    samples: Iterable[Sample],
    count: int,
    arms: Sequence[Arm],
    sigmas: Sequence[float],
    seed: int,
    quantize: bool,
    clean: bool,
    score: Callable[[Sample, list[np.ndarray]], list[dict]],
    progress: ProgressFn | None,
) -> list[dict]:
    """A row per image, sigma and arm: `score(sample, head inputs of the arms)` gives each arm's metrics."""
    total, rows = count * (len(sigmas) + clean), []
    for done, (position, sample, sigma, images) in enumerate(
        arm_images(samples, arms, sigmas, seed, quantize, clean), 1
    ):
        for arm, metrics in zip(images, score(sample, list(images.values()))):
            rows.append(
                {
                    "arm": arm,
                    "sigma": sigma,
                    "image": sample.name,
                    "position": position,
                    "index": sample.index,
                    "seed": seed,
                    **metrics,
                }
            )
        if progress:
            progress(done, total, f"seed {seed} {sample.name} sigma {sigma if sigma is not None else 'clean'}")
    return rows


def quantize_text(quantize: bool) -> str:
    if quantize:
        return (
            "the noisy image is clipped and rounded to 8 bits, and that same image is what every arm starts from "
            "(the noisy arm feeds it to the head; denoisers denoise it); "
            "denoised outputs are clipped and rounded to uint8 before the head."
        )
    return (
        "denoisers get the unclipped float noisy image (the project's noise protocol); "
        "the noisy arm feeds the head that image clipped and rounded to 8 bits; "
        "denoised outputs are clipped and rounded to uint8 before the head."
    )

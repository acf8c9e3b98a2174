"""The labelled data of joint training: images with their class indices or masks, and the crops a head trains on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fastdenoise.datasets import load_mask, read_labels
from fastdenoise.images import list_images, load_rgb
from fastdenoise.models.heads.geometry import resize_short_side
from fastdenoise.training.samplers import PatchSampler
from fastdenoise.words import plural


class CropSampler(PatchSampler):
    """The PatchSampler of a head's crops: flipped left-right or not, never rotated (heads know which way is up);
    target: (N,) labels, (N, P, P) masks or None."""

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
        super().__init__(images, crop, batch, sigma, seed, labels=labels, masks=masks, rotate=False)


def load_classification(
    root: Path, labels_csv: Path | None, num_classes: int, short_side: int | None
) -> tuple[list[np.ndarray], list[int]]:
    """Images and class indices from a `file,index` CSV (files relative to root) or from class sub-folders
    (sorted folder i = class i, as torchvision's ImageFolder: all num_classes folders must be there)."""
    root = Path(root)
    if labels_csv is not None:
        pairs = [(root / name, index) for name, index in read_labels(labels_csv)]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(folders) != num_classes:
            raise ValueError(
                f"{root}: {len(folders)} class folders for a {num_classes}-class head; pass a labels CSV instead"
            )
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
    images_paths = list_images(Path(root))
    if not images_paths:
        raise FileNotFoundError(f"{root}: no images found")
    by_stem = {p.relative_to(mask_root).with_suffix("").as_posix(): p for p in list_images(Path(mask_root))}
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in images_paths]
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise FileNotFoundError(f"{mask_root}: no mask for {plural(len(missing), 'image')} (first: {missing[0]})")
    images, masks = [], []
    for path, stem in zip(images_paths, stems):
        image = load_rgb(path)
        mask = load_mask(by_stem[stem], image.shape[:2])
        if short_side is not None:
            image, mask = resize_short_side(image, short_side), resize_short_side(mask, short_side, nearest=True)
        images.append(image)
        masks.append(mask)
    return images, masks


def check_masks(masks: Sequence[np.ndarray], num_classes: int, ignore_index: int) -> None:
    """Every mask value must be a class of the head or ignore_index."""
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    bad = [int(v) for v in values if v >= num_classes and v != ignore_index]
    if bad:
        raise ValueError(
            f"mask values {bad} are neither classes of the {num_classes}-class head nor ignore_index ({ignore_index})"
        )

"""Training batches: random clean patches (with labels or masks for a head) with flips, rotations, optionally moved
colours and a down-scale, and Gaussian noise drawn on the fly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fastdenoise.images import list_images, load_rgb
from fastdenoise.noise import store_jpeg
from fastdenoise.words import plural


@dataclass
class Batch:
    """One training batch, (N, 3, P, P) float32 in [0, 1] (noisy is not clipped); target for task losses; sigma (N,)
    the noise level of each patch (0-255), which a noise-map denoiser takes."""

    noisy: Tensor
    clean: Tensor
    target: Tensor | None = None
    sigma: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return Batch(move(self.noisy), move(self.clean), move(self.target), move(self.sigma))


def folder_images(root: Path, limit: int | None = None) -> list[Path]:
    """The image files of a folder (the first `limit`); FileNotFoundError when there are none."""
    paths = list_images(root)[:limit]
    if not paths:
        raise FileNotFoundError(f"{root}: no images found")
    return paths


def load_folder(root: Path, limit: int | None = None) -> list[np.ndarray]:
    """All images of a folder as uint8 arrays (CBSD432 is 200 MB in memory)."""
    return [load_rgb(p) for p in folder_images(root, limit)]


def jpeg_roundtrip(image: Tensor, quality: int) -> Tensor:
    """(3, H, W) in [0, 1] as a camera stores it (`noise.store_jpeg`): clipped, 8-bit, JPEG 4:2:0, decoded."""
    return torch.from_numpy(store_jpeg(image.permute(1, 2, 0).numpy(), quality)).permute(2, 0, 1).contiguous()


SATURATION = (0.5, 2.0)  # `colour`: the chroma's scale, log-uniform in this range (1/2: muted, 2: vivid)


def move_colours(patch: Tensor, order: Sequence[int], saturation: float, hue: float) -> Tensor:
    """(3, P, P) in [0, 1] with its channels in `order`, then its chroma (each pixel's part off the grey axis) scaled
    by `saturation` and turned `hue` radians about that axis; each pixel keeps its channel mean until the clip to
    [0, 1]."""
    x = patch[list(order)]
    grey = x.mean(0, keepdim=True)
    c = x - grey  # orthogonal to the grey axis u = (1, 1, 1) / sqrt 3, so Rodrigues' rotation is cos c + sin (u x c)
    turned = math.cos(hue) * c + math.sin(hue) / math.sqrt(3) * torch.stack((c[2] - c[1], c[0] - c[2], c[1] - c[0]))
    return (grey + saturation * turned).clamp(0.0, 1.0)


def shrink(region: Tensor, side: int) -> Tensor:
    """(3, S, S) uint8 or float -> (3, side, side) float in [0, 1]: antialiased (area-like) down-scale."""
    x = region[None].float() / (255.0 if region.dtype == torch.uint8 else 1.0)
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


class PatchSampler:
    """Infinite iterator of `Batch`es: random patches, each one of the 8 flips/rotations (rotate=False: flipped
    left-right or not, for heads that know which way is up), Gaussian noise of a sigma uniform in the range per patch;
    with `jpeg` (a quality range), a `jpeg_share` of the noisy patches then stored as JPEG (`jpeg_roundtrip`).
    downscale > 1: each patch is cut from a square up to that many times larger (uniform factor) and shrunk to the
    patch (`shrink`): sharper edges and finer texture than the photos hold. colour: that share of the clean patches
    gets a random channel order, saturation and hue (`move_colours`) before the noise. Neither draws when off.
    target: (N,) `labels` of the picked images, (N, P, P) crops of their `masks` (augmented alike), or None. Its whole
    state is one torch.Generator, so a resumed run repeats exactly."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        patch: int,
        batch: int,
        sigma: tuple[float, float],
        seed: int,
        names: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        masks: Sequence[np.ndarray] | None = None,
        rotate: bool = True,
        jpeg: tuple[int, int] | None = None,
        jpeg_share: float = 0.5,
        colour: float = 0.0,
        downscale: float = 1.0,
    ) -> None:
        if (labels is not None or masks is not None) and (colour or downscale != 1.0):
            raise ValueError("colour and downscale move the clean image alone: they are for denoiser training")
        if labels is not None and masks is not None:
            raise ValueError("give labels (classification) or masks (segmentation), not both")
        for name, items in (("labels", labels), ("masks", masks)):
            if items is not None and len(items) != len(images):
                raise ValueError(f"{plural(len(images), 'image')} but {len(items)} {name}")
        small = [i for i, im in enumerate(images) if min(im.shape[:2]) < patch]
        if small:
            h, w = images[small[0]].shape[:2]
            first = f"{names[small[0]]}, {w}x{h}" if names else f"index {small[0]}"
            verb = "is" if len(small) == 1 else "are"
            raise ValueError(
                f"{plural(len(small), 'training image')} {verb} smaller than the {patch}px patch (first: {first})"
            )
        if masks is not None and any(m.shape != im.shape[:2] for m, im in zip(masks, images)):
            raise ValueError("every mask must have its image's height and width")
        self.images, self.patch, self.batch, self.sigma = images, patch, batch, sigma
        self.labels, self.masks, self.rotate = labels, masks, rotate
        self.jpeg, self.jpeg_share = jpeg, jpeg_share
        self.colour, self.downscale = colour, downscale
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> PatchSampler:
        return self

    def __next__(self) -> Batch:
        g, p, n = self.generator, self.patch, self.batch
        picks = torch.randint(len(self.images), (n,), generator=g).tolist()
        clean = torch.empty(n, 3, p, p)
        masks = torch.empty(n, p, p, dtype=torch.long) if self.masks is not None else None
        for k, i in enumerate(picks):
            image = self.images[i]
            side = p
            if self.downscale != 1.0:  # drawn only then: a run without it keeps its random stream
                scale = 1.0 + (self.downscale - 1.0) * float(torch.rand((), generator=g))
                side = min(round(scale * p), *image.shape[:2])
            y = int(torch.randint(image.shape[0] - side + 1, (1,), generator=g))
            x = int(torch.randint(image.shape[1] - side + 1, (1,), generator=g))
            d = int(torch.randint(8 if self.rotate else 2, (1,), generator=g))  # one of the 8 flips/rotations, or 2
            turns, flip = (d % 4, d >= 4) if self.rotate else (0, d == 1)
            crop = torch.rot90(torch.from_numpy(image[y : y + side, x : x + side]).permute(2, 0, 1), turns, (1, 2))
            crop = crop.flip(2) if flip else crop
            clean[k] = crop.float() / 255.0 if side == p else shrink(crop, p)
            if masks is not None:
                mask = torch.rot90(
                    torch.from_numpy(self.masks[i][y : y + p, x : x + p]),
                    turns,
                    (0, 1),  # type: ignore[index]
                )
                masks[k] = mask.flip(1) if flip else mask
        if self.colour:  # drawn only then, as downscale
            moved = torch.rand(n, generator=g) < self.colour
            orders = torch.rand(n, 3, generator=g).argsort(1)
            lo, hi = (math.log(s) for s in SATURATION)
            saturations = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))
            hues = (2 * torch.rand(n, generator=g) - 1) * math.pi
            for k in moved.nonzero().flatten().tolist():
                clean[k] = move_colours(clean[k], orders[k].tolist(), float(saturations[k]), float(hues[k]))
        lo, hi = self.sigma
        sigma = lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g)
        noisy = clean + torch.randn(clean.shape, generator=g) * (sigma / 255.0)
        if self.jpeg is not None:  # drawn only then: a run without it keeps its random stream
            stored = torch.rand(n, generator=g) < self.jpeg_share
            qualities = torch.randint(self.jpeg[0], self.jpeg[1] + 1, (n,), generator=g)
            for k in stored.nonzero().flatten().tolist():
                noisy[k] = jpeg_roundtrip(noisy[k], int(qualities[k]))
        labels = torch.tensor([self.labels[i] for i in picks]) if self.labels is not None else None
        return Batch(noisy, clean, labels if labels is not None else masks, sigma.flatten())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

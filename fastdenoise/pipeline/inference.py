"""One group of equal-size images through the backend (tiled when larger than the tile) and the optional head:
uint8 in, uint8 out, each image's prediction and any reason its output must not be written."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from fastdenoise.backends import Backend
from fastdenoise.pipeline.predictions import Prediction, Predictor
from fastdenoise.pipeline.tiling import denoise_tiled

if TYPE_CHECKING:
    from fastdenoise.pipeline.runner import RunConfig


def host_nchw(n: int, c: int, h: int, w: int, dtype: type) -> torch.Tensor:
    """An uninitialised (N, C, H, W) CPU tensor stored (N, H, W, C) in numpy's memory: numpy asks for transparent huge
    pages for large arrays, so first touching a batch (75 MB of float for 4 x 1.5 MP) faults 2 MB at a time, not 4 kB:
    4x faster than torch's own allocation on a 2-core EPYC VM (the float round trip in bench/host_pipeline.py)."""
    return torch.from_numpy(np.empty((n, h, w, c), dtype)).permute(0, 3, 1, 2)


def to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1] on device; uint8 crosses the bus (4x fewer bytes)."""
    x = torch.from_numpy(batch)
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    if device.type != "cpu":
        return x.permute(0, 3, 1, 2).float().div_(255)
    n, h, w, c = batch.shape
    return host_nchw(n, c, h, w, np.float32).copy_(x.permute(0, 3, 1, 2)).div_(255)


def quantize(y: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> the same in 0..255, clipped and rounded half to even (as `noise.to_uint8`)."""
    if y.device.type != "cpu" or y.dtype != torch.float32:
        return y.mul(255).round_().clamp_(0, 255)
    return torch.mul(y, 255, out=host_nchw(*y.shape, np.float32)).round_().clamp_(0, 255)


def to_images(q: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) quantized float -> (N, H, W, 3) uint8 on the CPU."""
    if q.device.type != "cpu":
        return q.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return host_nchw(*q.shape, np.uint8).copy_(q).permute(0, 2, 3, 1).numpy()


@runtime_checkable
class ByteBackend(Protocol):
    """A `Backend` that also takes a batch as bytes: (N, H, W, 3) uint8 on the CPU -> the denoised batch the same way,
    converting where it computes; the host then does no float round trip (the null backend: bench/host_pipeline.py)."""

    device: torch.device

    def denoise_uint8(self, batch: Tensor) -> Tensor: ...


NON_FINITE = "denoising gave NaN or Inf values (broken weights, or a precision too narrow for them)"


class GroupError(Exception):
    """A batch that could not be denoised (or its head run); the message is the reason, for each image's row."""


def all_finite(y: torch.Tensor) -> list[bool]:
    """(N, ...) -> whether each item holds only finite values. A finite sum says so in one read (10-30x faster than
    isfinite's bool copy on the CPU); a sum that is not (a NaN or Inf, or an overflow) is checked value by value."""
    sums = y.sum(dim=tuple(range(1, y.dim())))
    return [bool(ok) or bool(torch.isfinite(y[n]).all()) for n, ok in enumerate(torch.isfinite(sums).tolist())]


def is_grey(image: np.ndarray) -> bool:
    """(H, W, 3) uint8: all three channels equal (a greyscale file, decoded to RGB, or an RGB file of grey pixels)."""
    for part in (image[:1], image):  # a colour photo shows colour in its first row: the whole image only after that
        if not (np.array_equal(part[..., 0], part[..., 1]) and np.array_equal(part[..., 1], part[..., 2])):
            return False
    return True


def grey_where_grey(q: torch.Tensor, grey: list[bool]) -> torch.Tensor:
    """(N, 3, H, W) quantized output: the images whose input was grey get the rounded mean of their channels in all
    three (the network denoises each channel a little differently, which would tint a grey photo)."""
    for n in (n for n, flag in enumerate(grey) if flag):
        q[n] = q[n].mean(0, keepdim=True).round_().expand_as(q[n])
    return q


def float_group(backend: Backend, images: list[np.ndarray], cfg: RunConfig) -> tuple[np.ndarray, list[bool], Tensor]:
    """The float round trip: uint8 images -> float batch on the device -> backend (tiled for one image larger than
    the tile) -> quantized, grey kept grey -> (N, H, W, 3) uint8; with each image's finiteness and the quantized
    (N, 3, H, W) float batch (for a head)."""
    if max(images[0].shape[:2]) > cfg.tile:
        x = torch.from_numpy(images[0]).permute(2, 0, 1)[None].float().div_(255)
        y = denoise_tiled(backend, x, cfg.tile, cfg.overlap, cfg.batch)
    else:
        y = backend(to_device(np.stack(images), backend.device))
    finite = all_finite(y)  # NaN would be written as black, Inf as white
    y = grey_where_grey(quantize(y), [is_grey(image) for image in images])
    return to_images(y), finite, y


def byte_group(backend: ByteBackend, images: list[np.ndarray]) -> np.ndarray:
    """A backend that takes bytes: (N, H, W, 3) uint8 in and out, no float copy on the host; grey inputs kept grey as
    `grey_where_grey` keeps them (the same rounded mean)."""
    out = backend.denoise_uint8(torch.from_numpy(np.stack(images)))
    grey = [is_grey(image) for image in images]
    if any(grey):
        fixed = grey_where_grey(out.permute(0, 3, 1, 2).float(), grey)  # every pixel an integer: exact in float32
        out = torch.where(torch.tensor(grey)[:, None, None, None], fixed.permute(0, 2, 3, 1).to(torch.uint8), out)
    return out.numpy()


def denoise_group(
    backend: Backend, predictor: Predictor | None, images: list[np.ndarray], cfg: RunConfig, stages: dict[str, float]
) -> tuple[np.ndarray, list[Prediction | None], list[str | None]]:
    """Equal-size (H, W, 3) uint8 images -> their denoised images (N, H, W, 3) uint8, with a predictor each one's
    prediction, and each one's problem (None, or why its output must not be written: NaN/Inf values); one image
    larger than the tile goes alone, tile by tile (memory bounded by the tile). A backend that takes bytes
    (`ByteBackend`) gets them whole-image. Adds the seconds spent to stages["compute"] and stages["head"]; raises
    GroupError (out of memory, say) for the whole group."""
    tick = time.perf_counter()
    try:
        if isinstance(backend, ByteBackend) and max(images[0].shape[:2]) <= cfg.tile:
            results, finite, y = byte_group(backend, images), [True] * len(images), None
        else:
            results, finite, y = float_group(backend, images, cfg)
    except (RuntimeError, ValueError) as err:
        raise GroupError(f"denoising failed: {err}") from err
    finally:
        stages["compute"] += time.perf_counter() - tick
    problems = [None if ok else NON_FINITE for ok in finite]
    if predictor is None:
        return results, [None] * len(images), problems
    tick = time.perf_counter()
    try:  # the head sees the 8-bit image as written; a large image whole, not tiled
        if y is None:
            y = torch.from_numpy(results).to(backend.device).permute(0, 3, 1, 2).float()
        return results, list(predictor(y.div_(255))), problems
    except (RuntimeError, ValueError) as err:
        raise GroupError(f"{predictor.task} head failed: {err}") from err
    finally:
        stages["head"] += time.perf_counter() - tick


def denoise_floats(backend: Backend, x: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> the denoised float32 batch on the CPU, not quantized (the 8-bit path is
    `denoise_group`'s); an image larger than the tile goes tile by tile."""
    if max(x.shape[-2:]) <= cfg.tile:
        return backend(x.to(backend.device, torch.float32)).cpu()
    return torch.cat(
        [denoise_tiled(backend, x[n : n + 1].cpu().float(), cfg.tile, cfg.overlap, cfg.batch) for n in range(len(x))]
    )

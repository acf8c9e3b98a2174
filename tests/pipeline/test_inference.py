"""One group through a backend (`inference.denoise_group`): a backend that takes bytes (the null backend) gives the
very outputs, grey handling and head input of the float round trip; a float-only backend still takes the float path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.backends.null import FloatNullBackend, NullBackend
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.pipeline.inference import ByteBackend, denoise_group, quantize, to_device, to_images
from fastdenoise.pipeline.runner import RunConfig

TINT = (3, -2, 5)  # per channel, in 8-bit steps: a grey input comes back tinted unless the run greys it again


class FloatTint(FloatNullBackend):
    """Adds TINT/255 to each channel of the float batch."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tensor(TINT, dtype=x.dtype).view(1, 3, 1, 1) / 255


class ByteTint(FloatTint):
    """The same tint on bytes (clipped as quantize clips)."""

    def denoise_uint8(self, batch: torch.Tensor) -> torch.Tensor:
        return (batch.int() + torch.tensor(TINT)).clamp_(0, 255).to(torch.uint8)


class Recorder:
    """A head that keeps what it was shown: (N, 3, H, W) in [0, 1]."""

    task = "classify"

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, y: torch.Tensor) -> list[None]:
        self.seen.append(y.clone())
        return [None] * len(y)


def group(make_image, h: int, w: int, n: int, grey: tuple[int, ...] = ()) -> list[np.ndarray]:
    images = [make_image(h, w) for _ in range(n)]
    for image in images:
        image[0, :3] = ((0, 255, 128), (255, 255, 255), (0, 0, 0))  # the clip at both ends
    for k in grey:
        images[k] = np.repeat(images[k][..., :1], 3, axis=2)
    return images


def run(backend, images: list[np.ndarray], predictor=None, tile: int = 1024):
    stages = {"compute": 0.0, "head": 0.0}
    return denoise_group(backend, predictor, images, RunConfig(tile=tile, overlap=16), stages)


@pytest.mark.parametrize("h,w,n,grey", [(37, 53, 1, ()), (48, 64, 4, (1, 3)), (21, 90, 3, (0,))])
def test_the_null_backend_takes_bytes_and_hands_back_the_inputs_exactly(make_image, h, w, n, grey):
    images = group(make_image, h, w, n, grey)
    assert isinstance(NullBackend(), ByteBackend) and not isinstance(FloatNullBackend(), ByteBackend)
    results, predictions, problems = run(NullBackend(), images)
    floats, _, float_problems = run(FloatNullBackend(), images)
    assert results.dtype == np.uint8 and np.array_equal(results, np.stack(images))
    assert np.array_equal(results, floats) and problems == float_problems == [None] * n
    assert predictions == [None] * n


@pytest.mark.parametrize("grey", [(), (0,), (1, 2)])
def test_bytes_and_floats_give_the_same_pixels_and_grey_stays_grey(make_image, grey):
    images = group(make_image, 40, 56, 3, grey)
    by_bytes, _, _ = run(ByteTint(), images)
    by_floats, _, _ = run(FloatTint(), images)
    assert np.array_equal(by_bytes, by_floats)
    for k in range(3):
        channels_equal = np.array_equal(by_bytes[k, ..., 0], by_bytes[k, ..., 1]) and np.array_equal(
            by_bytes[k, ..., 1], by_bytes[k, ..., 2]
        )
        assert channels_equal == (k in grey)  # tinted, except the grey inputs: their rounded mean in all three


def test_a_head_sees_the_same_batch_after_bytes_as_after_floats(make_image):
    images = group(make_image, 32, 48, 2, (1,))
    seen = {}
    for name, backend in (("bytes", ByteTint()), ("floats", FloatTint())):
        head = Recorder()
        run(backend, images, head)
        (seen[name],) = head.seen
    assert seen["bytes"].dtype == seen["floats"].dtype == torch.float32
    assert torch.equal(seen["bytes"], seen["floats"])


def test_an_image_larger_than_the_tile_goes_the_float_way_in_tiles(make_image):
    images = group(make_image, 130, 90, 1)
    results, _, _ = run(ByteTint(), images, tile=64)
    floats, _, _ = run(FloatTint(), images, tile=64)
    assert np.array_equal(results, floats)


@pytest.mark.usefixtures("one_torch_thread")
def test_the_eager_backend_takes_the_float_round_trip_as_before(make_image):
    from helpers import SMALL, randomize_bn

    torch.manual_seed(0)
    backend = make_backend(randomize_bn(Denoiser(SMALL)), BackendConfig(device="cpu", precision="fp32"))
    assert not isinstance(backend, ByteBackend)
    images = group(make_image, 40, 48, 3, (2,))
    results, _, problems = run(backend, images)
    y = quantize(backend(to_device(np.stack(images), torch.device("cpu"))))  # the float path, step by step
    y[2] = y[2].mean(0, keepdim=True).round_().expand_as(y[2])
    assert problems == [None] * 3 and np.array_equal(results, to_images(y))

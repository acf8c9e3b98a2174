import pytest
import torch
from helpers import SMALL, randomize_bn

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.pipeline.tiling import denoise_tiled, tile_spans


@pytest.mark.parametrize("length,tile,overlap", [(301, 128, 32), (100, 128, 32), (130, 128, 32), (517, 64, 16)])
def test_tiles_cover_the_axis_on_the_stride_grid(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(start % 4 == 0 for start, _ in spans)
    assert all(end - start <= tile + 3 for start, end in spans)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end - start >= overlap  # consecutive tiles overlap by at least `overlap`


def test_tiled_equals_untiled_within_tolerance():
    model = randomize_bn(Denoiser(SMALL))
    backend = make_backend(model, BackendConfig(device="cpu", precision="fp32"))
    x = torch.rand(1, 3, 203, 157)
    whole = backend(x)
    tiled = denoise_tiled(backend, x, tile=64, overlap=24, batch=3)
    assert tiled.shape == whole.shape
    diff = (tiled - whole).abs()
    assert diff.mean() < 1e-3 and diff.max() < 2e-2


def test_bad_tile_arguments():
    backend = make_backend(Denoiser(SMALL), BackendConfig(device="cpu", precision="fp32"))
    with pytest.raises(ValueError, match="multiples"):
        denoise_tiled(backend, torch.rand(1, 3, 50, 50), tile=30, overlap=8)

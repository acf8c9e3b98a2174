import pytest
import torch
from helpers import SMALL, randomize_bn

from fastdenoise.model import Denoiser, DenoiserSpec, count_parameters, fold_bn, macs_per_pixel


def test_released_network_size_and_cost():
    model = Denoiser()
    assert abs(count_parameters(model) - 1.03e6) < 0.01e6
    assert round(macs_per_pixel() * 2 / 1e3) == 441  # GFLOP per megapixel


@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (17, 33), (37, 51), (64, 48)])
def test_output_size_equals_input_size(h, w):
    model = randomize_bn(Denoiser(SMALL))
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_learns_the_residual():
    model = randomize_bn(Denoiser(SMALL))
    torch.nn.init.zeros_(model.head[0].weight)
    torch.nn.init.zeros_(model.head[0].bias)
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        assert torch.equal(model(x), x)  # zero residual head -> identity through the global skip


def test_fold_bn_matches_unfolded():
    model = randomize_bn(Denoiser())
    folded = fold_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched
    x = torch.rand(2, 3, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_spec_validation():
    with pytest.raises(ValueError, match="c0"):
        DenoiserSpec(c0=0)

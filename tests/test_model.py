import pytest
import torch
from helpers import SMALL, randomize_bn

from fastdenoise.models.denoiser import (
    Denoiser,
    DenoiserSpec,
    bind_sigma,
    count_parameters,
    fold_bn,
    macs_per_pixel,
    with_noise_map,
)


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


def test_noise_map_variant_starts_as_the_blind_model_and_costs_under_5_percent_more():
    blind = randomize_bn(Denoiser(SMALL))
    conditioned = with_noise_map(blind).eval()
    x = torch.rand(3, 3, 21, 30)
    levels = torch.tensor([0.0, 25.0, 75.0])
    assert torch.equal(conditioned(x, levels), blind(x))  # the level's weights start at zero
    assert conditioned.conv0[0].weight.shape[1] == 4
    full = DenoiserSpec()
    assert 1 < macs_per_pixel(DenoiserSpec(noise_map=True)) / macs_per_pixel(full) < 1.05


def test_the_noise_level_reaches_the_output_per_image_and_when_bound():
    model = with_noise_map(randomize_bn(Denoiser(SMALL))).eval()
    torch.nn.init.normal_(model.conv0[0].weight[:, 3:], std=0.5)  # as after training: the level matters
    x = torch.rand(2, 3, 16, 20)
    apart = model(x, torch.tensor([10.0, 60.0]))
    assert not torch.allclose(apart, model(x, 10.0))
    assert torch.allclose(apart[1:], model(x[1:], 60.0), atol=1e-6)  # each image gets its own level
    bound = fold_bn(bind_sigma(model, 60.0))
    assert torch.allclose(bound(x[1:]), apart[1:], atol=1e-5)  # bound, BN folded: same as passing the level
    with pytest.raises(ValueError, match="takes the noise level"):
        model(x)
    with pytest.raises(ValueError, match="blind"):
        bind_sigma(randomize_bn(Denoiser(SMALL)), 25.0)


def test_noise_map_spec_is_a_bool():
    with pytest.raises(ValueError, match="noise_map"):
        DenoiserSpec(noise_map=1)
    with pytest.raises(ValueError, match="c0"):
        DenoiserSpec(c0=True)

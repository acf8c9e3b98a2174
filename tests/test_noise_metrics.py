import math

import numpy as np
import pytest

from fastdenoise.metrics import psnr, ssim
from fastdenoise.noise import add_noise, check_sigma, to_uint8


def test_noise_protocol_is_the_documented_formula(make_image):
    image = make_image(11, 13)
    noisy = add_noise(image, 25, seed=7, index=3)
    expected = image / 255.0 + np.random.default_rng([7, 3]).standard_normal((11, 13, 3)) * 25 / 255
    np.testing.assert_allclose(noisy, expected.astype(np.float32), rtol=0, atol=1e-7)
    assert noisy.min() < 0 or noisy.max() > 1  # not clipped


def test_noise_depends_on_seed_and_index_only(make_image):
    image = make_image(9, 9)
    a = add_noise(image, 30, 0, 1)
    np.testing.assert_array_equal(a, add_noise(image, 30, 0, 1))
    assert not np.array_equal(a, add_noise(image, 30, 0, 2))
    assert not np.array_equal(a, add_noise(image, 30, 1, 1))
    measured = (a - image / 255.0).std() * 255
    assert 25 < measured < 35


@pytest.mark.parametrize("bad", [-1, 255.5, float("nan")])
def test_sigma_out_of_range(bad):
    with pytest.raises(ValueError, match="sigma"):
        check_sigma(bad)


def test_to_uint8_clips_and_rounds():
    x = np.array([[[-0.2, 0.5, 1.3]]], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(x), [[[0, 128, 255]]])


def test_psnr_against_hand_computed_value(make_image):
    a = make_image(16, 16).astype(np.int16)
    b = a.copy()
    b[0, :4, 0] = np.clip(a[0, :4, 0] + 10, 0, 255)
    diff = (b - a).astype(np.float64)
    mse = (diff**2).sum() / a.size
    assert psnr(a.astype(np.uint8), b.astype(np.uint8)) == pytest.approx(10 * math.log10(255**2 / mse))
    assert psnr(a.astype(np.uint8), a.astype(np.uint8)) == math.inf


def test_psnr_of_uniform_error_of_one_level(make_image):
    a = np.clip(make_image(8, 8), 1, 254)
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2), abs=1e-9)  # 48.13 dB


def test_ssim_orders_quality(make_image):
    clean = make_image(64, 64)
    rng = np.random.default_rng(0)
    light = np.clip(clean + rng.normal(0, 5, clean.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(clean + rng.normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
    assert ssim(clean, clean) == pytest.approx(1.0)
    assert 1.0 > ssim(light, clean) > ssim(heavy, clean)


def test_store_jpeg_keeps_a_noisy_image_as_a_camera_does(make_image):
    from fastdenoise.noise import store_jpeg

    noisy = add_noise(make_image(40, 56), 25, 0, 0)
    stored = store_jpeg(noisy, 90)
    assert stored.dtype == np.float32 and stored.shape == noisy.shape and 0 <= stored.min() and stored.max() <= 1
    assert np.array_equal(stored * 255, np.rint(stored * 255))  # 8-bit levels
    assert 0 < np.abs(stored - np.clip(noisy, 0, 1)).mean() < 0.1  # changed, as JPEG does, but the same picture
    assert np.abs(store_jpeg(noisy, 50) - np.clip(noisy, 0, 1)).mean() > np.abs(stored - np.clip(noisy, 0, 1)).mean()

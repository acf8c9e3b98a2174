"""Peers: MatConvNet weight reading, FFDNet's sub-pixel order, PSNR on two Kodak crops, the CBM3D cache."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastdenoise.evaluation.peers import (
    CBM3D,
    DnCNN,
    FFDNet,
    MatConv,
    PeerKind,
    ffdnet_shuffle_order,
    load_dncnn,
    load_ffdnet,
    load_peer_model,
    timed,
)
from fastdenoise.images import load_rgb
from fastdenoise.metrics import psnr
from fastdenoise.noise import add_noise, to_uint8

# PSNR (dB) on the two crops below at sigma 25, noise seed [0, i], measured with the implementation that reproduces the
# README's Kodak24 reference points (CDnCNN-B 32.13, CDnCNN sigma=25 32.35, FFDNet 32.25 dB; bench/eval_peers.py).
CROP_PSNR = {"cdncnn-b": (28.9706, 31.8852), "cdncnn-25": (29.0251, 32.1999), "ffdnet": (28.9549, 32.1212)}


def random_convs(rng: np.random.Generator, widths: list[int]) -> list[MatConv]:
    return [
        MatConv(
            rng.normal(0, 0.1, (cout, cin, 3, 3)).astype(np.float32), rng.normal(0, 0.1, cout).astype(np.float32), 1
        )
        for cin, cout in itertools.pairwise(widths)
    ]


def test_ffdnet_order_is_matconvnet_column_major(rng: np.random.Generator) -> None:
    """Within each colour, MatConvNet's sub-image k is offset (k % 2, k // 2): row offset first (column-major)."""
    x = torch.from_numpy(rng.random((1, 3, 6, 8), dtype=np.float32))
    sub = F.pixel_unshuffle(x, 2)[:, ffdnet_shuffle_order(3)]
    for c in range(3):
        for k in range(4):
            dy, dx = k % 2, k // 2
            torch.testing.assert_close(sub[0, 4 * c + k], x[0, c, dy::2, dx::2])
    order = ffdnet_shuffle_order(3)
    assert torch.equal(order[order], torch.arange(12))  # its own inverse, so the up step uses the same order


def test_ffdnet_pads_odd_sizes_and_takes_one_sigma_per_image(rng: np.random.Generator) -> None:
    model = FFDNet(random_convs(rng, [13, 16, 12])).eval()
    x = torch.from_numpy(rng.random((2, 3, 17, 10), dtype=np.float32))
    with torch.no_grad():
        both = model(x, torch.tensor([10.0, 40.0]))
        first, second = model(x[:1], 10.0), model(x[1:], 40.0)
    assert both.shape == x.shape
    torch.testing.assert_close(both, torch.cat([first, second]))
    assert not torch.allclose(model(x[:1], 10.0), model(x[:1], 40.0))  # the noise map reaches the network


def test_dncnn_subtracts_the_predicted_noise(rng: np.random.Generator) -> None:
    model = DnCNN(random_convs(rng, [3, 8, 8, 3])).eval()
    x = torch.from_numpy(rng.random((1, 3, 9, 11), dtype=np.float32))
    with torch.no_grad():
        torch.testing.assert_close(model(x), x - model.body(x))
    out = model.denoise(x[0].permute(1, 2, 0).numpy(), 25.0)
    assert out.shape == (9, 11, 3) and out.dtype == np.float32


def test_loaders_reject_missing_and_wrong_files(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("h5py", reason="reading MatConvNet v7.3 weights needs h5py")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        load_dncnn(tmp_path / "absent.mat")
    (tmp_path / "junk.mat").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a MatConvNet"):
        load_dncnn(tmp_path / "junk.mat")
    with pytest.raises(ValueError, match="not a colour DnCNN"):
        load_dncnn(data_dir / "weights/ffdnet/FFDNet_color.mat")
    with pytest.raises(ValueError, match="not a colour FFDNet"):
        load_ffdnet(data_dir / "weights/dncnn/GD_Color_Blind.mat")


@pytest.fixture
def crops(data_dir: Path) -> list[np.ndarray]:
    if not (data_dir / "kodak24").is_dir() or not (data_dir / "weights").is_dir():
        pytest.skip(f"Kodak24 or peer weights not found under {data_dir} (set FASTDENOISE_DATA)")
    return [
        load_rgb(data_dir / "kodak24/kodim01.png")[100:196, 200:296],
        load_rgb(data_dir / "kodak24/kodim03.png")[150:246, 300:396],
    ]


@pytest.mark.data
@pytest.mark.parametrize("kind", list(CROP_PSNR))
def test_peer_psnr_on_kodak_crops(kind: str, crops: list[np.ndarray], data_dir: Path) -> None:
    pytest.importorskip("h5py", reason="reading MatConvNet v7.3 weights needs h5py")
    model = load_peer_model(PeerKind(kind), data_dir)
    scores = [psnr(to_uint8(model.denoise(add_noise(c, 25, 0, i), 25.0)), c) for i, c in enumerate(crops)]
    assert scores == pytest.approx(CROP_PSNR[kind], abs=0.01)


def test_cbm3d_caches_outputs_and_their_seconds(tmp_path: Path, rng: np.random.Generator) -> None:
    pytest.importorskip("bm3d")
    calls = []

    def fake_bm3d_rgb(z: np.ndarray, sigma: float) -> np.ndarray:
        calls.append(sigma)
        return z * 0.5

    noisy = rng.random((8, 6, 3), dtype=np.float32)
    first = CBM3D(tmp_path)
    first.bm3d = SimpleNamespace(bm3d_rgb=fake_bm3d_rgb)
    out = first(noisy, 25.0)
    np.testing.assert_allclose(out, noisy * 0.5, rtol=1e-6)
    assert calls == [25.0 / 255.0] and len(list(tmp_path.glob("*.npz"))) == 1

    again = CBM3D(tmp_path)
    again.bm3d = SimpleNamespace(bm3d_rgb=fake_bm3d_rgb)
    wrapped, spent = timed(again)
    np.testing.assert_array_equal(wrapped(noisy, 25.0), out)
    assert calls == [25.0 / 255.0] and again.hits == 1  # served from the cache
    assert spent() == (pytest.approx(first.seconds), pytest.approx(8 * 6 / 1e6))  # the original compute time
    again(noisy, 30.0)
    assert len(calls) == 2  # another sigma is another key


def test_timed_counts_seconds_inside_the_call_and_megapixels(monkeypatch) -> None:
    import fastdenoise.evaluation.peers as peers

    clock = iter([10.0, 10.25, 11.0, 12.5])  # two calls: 0.25 s, then 1.5 s; the 0.75 s between them is not counted
    monkeypatch.setattr(peers.time, "perf_counter", lambda: next(clock))
    rng = np.random.default_rng(5)
    first, second = rng.random((100, 50, 3), np.float32), rng.random((10, 10, 3), np.float32)
    wrapped, spent = timed(lambda noisy, sigma: noisy * sigma)
    np.testing.assert_array_equal(wrapped(first, 2.0), first * 2.0)  # the wrapped function's output, unchanged
    wrapped(second, 25.0)
    assert spent() == (pytest.approx(1.75), pytest.approx((100 * 50 + 10 * 10) / 1e6))

"""Peer denoisers measured beside ours: colour DnCNN and FFDNet (MatConvNet weights read with h5py) and CBM3D (bm3d).

Each peer is used through the same `Denoise` call as our backends in `fastdenoise.evaluation.evaluate`:
``(noisy float32 HxWx3, sigma in 0-255 units) -> denoised float HxWx3``; the CNNs also take batches as tensors.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdenoise.evaluation.evaluate import Denoise, output_key
from fastdenoise.files import atomic_write


class PeerKind(str, enum.Enum):
    cdncnn_b = "cdncnn-b"  # blind, one network for sigma 0-55
    cdncnn_25 = "cdncnn-25"
    cdncnn_35 = "cdncnn-35"
    cdncnn_50 = "cdncnn-50"
    ffdnet = "ffdnet"  # non-blind: sigma is an input
    cbm3d = "cbm3d"


# Files under the shared data folder (see ../shared/data/README.md).
WEIGHT_FILES = {
    PeerKind.cdncnn_b: "weights/dncnn/GD_Color_Blind.mat",
    PeerKind.cdncnn_25: "weights/dncnn/color_sigma=25.mat",
    PeerKind.cdncnn_35: "weights/dncnn/color_sigma=35.mat",
    PeerKind.cdncnn_50: "weights/dncnn/color_sigma=50.mat",
    PeerKind.ffdnet: "weights/ffdnet/FFDNet_color.mat",
}
TRAINED_SIGMA = {PeerKind.cdncnn_25: 25.0, PeerKind.cdncnn_35: 35.0, PeerKind.cdncnn_50: 50.0}
LABELS = {
    PeerKind.cdncnn_b: "CDnCNN-B",
    PeerKind.cdncnn_25: "CDnCNN s=25",
    PeerKind.cdncnn_35: "CDnCNN s=35",
    PeerKind.cdncnn_50: "CDnCNN s=50",
    PeerKind.ffdnet: "FFDNet",
    PeerKind.cbm3d: "CBM3D",
}
# Conv MACs per input pixel (x2 for FLOPs), for the roofline and the quality/speed table.
DNCNN_MACS = 9 * (3 * 64 + 18 * 64 * 64 + 64 * 3)
MACS_PER_PIXEL = {
    PeerKind.cdncnn_b: DNCNN_MACS,
    PeerKind.cdncnn_25: DNCNN_MACS,
    PeerKind.cdncnn_35: DNCNN_MACS,
    PeerKind.cdncnn_50: DNCNN_MACS,
    PeerKind.ffdnet: 9 * (13 * 96 + 10 * 96 * 96 + 96 * 12) // 4,  # runs at half resolution
}


@dataclass(frozen=True)
class MatConv:
    """One conv layer of a MatConvNet net: torch-layout weight (out, in, kh, kw), bias (out,), zero padding."""

    weight: np.ndarray
    bias: np.ndarray
    pad: int


def read_matconvnet(path: Path) -> list[tuple[str, MatConv | None]]:
    """The layers of a MatConvNet v7.3 `net` as (type, conv or None): 'conv', 'relu', 'SubP', 'concat'."""
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "reading MatConvNet v7.3 weights needs h5py: pip install h5py (or fastdenoise[peers])"
        ) from err

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")

    def text(ds: h5py.Dataset) -> str:
        return "".join(chr(c) for c in np.asarray(ds).ravel())

    layers: list[tuple[str, MatConv | None]] = []
    try:
        with h5py.File(path, "r") as mat:
            for ref in mat["net/layers"][:, 0]:
                group = mat[ref]
                kind = text(group["type"])
                if kind != "conv":
                    layers.append((kind, None))
                    continue
                w_ref, b_ref = group["weights"][:, 0]
                # h5py reads MATLAB's (kh, kw, in, out) column-major array as (out, in, kw, kh).
                weight = np.ascontiguousarray(np.asarray(mat[w_ref], dtype=np.float32).transpose(0, 1, 3, 2))
                bias = np.asarray(mat[b_ref], dtype=np.float32).ravel()
                pad = int(np.asarray(group["pad"]).ravel()[0])
                layers.append((kind, MatConv(weight, bias, pad)))
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not a MatConvNet v7.3 net file ({err})") from err
    return layers


def conv_stack(convs: list[MatConv]) -> nn.Sequential:
    """conv -> ReLU -> ... -> conv (no ReLU after the last), weights copied from MatConvNet layers."""
    modules: list[nn.Module] = []
    for i, c in enumerate(convs):
        out_ch, in_ch, kh, _ = c.weight.shape
        conv = nn.Conv2d(in_ch, out_ch, kh, padding=c.pad)
        conv.weight.data.copy_(torch.from_numpy(c.weight))
        conv.bias.data.copy_(torch.from_numpy(c.bias))
        modules += [conv] if i == len(convs) - 1 else [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)


def _convs(layers: list[tuple[str, MatConv | None]]) -> list[MatConv]:
    return [c for _, c in layers if c is not None]


class DnCNN(nn.Module):
    """Zhang et al. 2017 colour DnCNN: 20 plain 3x3 convs (BN folded) predicting the noise; clean = y - net(y)."""

    def __init__(self, convs: list[MatConv]) -> None:
        super().__init__()
        self.body = conv_stack(convs)

    def forward(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """x (N, 3, H, W) noisy RGB in [0, 1]; sigma is ignored (blind or trained for one level)."""
        return x - self.body(x)

    def denoise(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        return run_on_array(self, noisy, sigma)


def ffdnet_shuffle_order(channels: int) -> Tensor:
    """MatConvNet's SubP orders each colour's four sub-images (0, 2, 1, 3) relative to torch's pixel_unshuffle."""
    return torch.tensor([4 * c + k for c in range(channels) for k in (0, 2, 1, 3)])


class FFDNet(nn.Module):
    """Zhang et al. 2018 colour FFDNet: 2x2 sub-pixel unshuffle, a constant noise-level map channel, 12 plain convs at
    half resolution predicting the clean sub-images, 2x2 shuffle back. Odd sizes are padded by replication."""

    def __init__(self, convs: list[MatConv]) -> None:
        super().__init__()
        self.body = conv_stack(convs)
        self.register_buffer("order", ffdnet_shuffle_order(3), persistent=False)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """x (N, 3, H, W) noisy RGB in [0, 1]; sigma in 0-255 units, a number or one per image (N,)."""
        n, _, h, w = x.shape
        y = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate") if h % 2 or w % 2 else x
        sub = F.pixel_unshuffle(y, 2)[:, self.order]  # (N, 12, H/2, W/2) in MatConvNet's channel order
        level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1) / 255.0
        noise_map = level.expand(n, 1, *sub.shape[-2:])
        out = self.body(torch.cat([sub, noise_map], 1))  # (N, 12, H/2, W/2): the clean sub-images
        return F.pixel_shuffle(out[:, self.order], 2)[..., :h, :w]  # the order is its own inverse

    def denoise(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        return run_on_array(self, noisy, sigma)


@torch.inference_mode()
def run_on_array(model: nn.Module, noisy: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) float noisy image -> (H, W, 3) float32 denoised, on the model's device."""
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32)).permute(2, 0, 1)[None].to(device)
    return model(x, sigma)[0].permute(1, 2, 0).float().cpu().numpy()


def load_dncnn(path: Path) -> DnCNN:
    """A colour DnCNN from a MatConvNet .mat file (`GD_Color_Blind.mat`, `color_sigma=25.mat`, ...)."""
    layers = read_matconvnet(path)
    convs = _convs(layers)
    if (
        [k for k, _ in layers if k not in ("conv", "relu")]
        or convs[0].weight.shape[1] != 3
        or convs[-1].weight.shape[0] != 3
    ):
        raise ValueError(f"{path}: not a colour DnCNN (expected a conv/ReLU stack from 3 to 3 channels)")
    return DnCNN(convs).eval()


def load_ffdnet(path: Path) -> FFDNet:
    """Colour FFDNet from `FFDNet_color.mat` (SubP, concat, 12 convs, SubP)."""
    layers = read_matconvnet(path)
    convs = _convs(layers)
    if (
        layers[0][0] != "SubP"
        or layers[-1][0] != "SubP"
        or convs[0].weight.shape[1] != 13
        or convs[-1].weight.shape[0] != 12
    ):
        raise ValueError(f"{path}: not a colour FFDNet (expected SubP, 13 -> ... -> 12 channel convs, SubP)")
    return FFDNet(convs).eval()


class CBM3D:
    """CBM3D (bm3d package, opponent colour space, 'np' profile) with an optional on-disk cache of its outputs.

    ~17 s per 512x512 image on 2 cores, so outputs are cached by (noisy image bytes, sigma, bm3d version), together
    with the seconds the computation took: `seconds` and `megapixels` count real work even when served from the cache.
    """

    def __init__(self, cache_dir: Path | None = None) -> None:
        try:
            import bm3d
        except ImportError as err:
            raise ImportError("CBM3D needs the bm3d package: pip install bm3d (or fastdenoise[peers])") from err
        self.bm3d = bm3d
        self.version = _package_version("bm3d")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.hits, self.seconds, self.megapixels = 0, 0.0, 0.0

    def key(self, noisy: np.ndarray, sigma: float) -> str:
        return output_key(noisy, sigma, f"bm3d {self.version}|np|opp")

    def __call__(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        path = self.cache_dir / f"{self.key(noisy, sigma)}.npz" if self.cache_dir else None
        self.megapixels += noisy.shape[0] * noisy.shape[1] / 1e6
        if path is not None and path.is_file():
            with np.load(path) as cached:
                self.hits += 1
                self.seconds += float(cached["seconds"])
                return cached["out"]
        start = time.perf_counter()
        out = self.bm3d.bm3d_rgb(noisy.astype(np.float64), sigma / 255.0).astype(np.float32)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        if path is not None:
            atomic_write(path, lambda handle: np.savez(handle, out=out, seconds=np.float64(seconds)))
        return out


def _package_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_cache_dir() -> Path:
    """$FASTDENOISE_CACHE/cbm3d, else $XDG_CACHE_HOME/fastdenoise/cbm3d, else ~/.cache/fastdenoise/cbm3d."""
    if "FASTDENOISE_CACHE" in os.environ:
        return Path(os.environ["FASTDENOISE_CACHE"]) / "cbm3d"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastdenoise" / "cbm3d"


def load_peer_model(kind: PeerKind, data_root: Path) -> DnCNN | FFDNet:
    """The torch module of a CNN peer, weights from `data_root` (the shared data folder)."""
    kind = PeerKind(kind)
    if kind not in WEIGHT_FILES:
        raise ValueError(f"{kind.value} is not a CNN peer; choose one of {[k.value for k in WEIGHT_FILES]}")
    path = Path(data_root) / WEIGHT_FILES[kind]
    return load_ffdnet(path) if kind == PeerKind.ffdnet else load_dncnn(path)


def make_peer(
    kind: PeerKind, data_root: Path, device: str | torch.device = "cpu", cache_dir: Path | None = None
) -> Denoise:
    """The `Denoise` call of a peer: CNNs on `device` in fp32, CBM3D on the CPU with its cache."""
    kind = PeerKind(kind)
    if kind == PeerKind.cbm3d:
        return CBM3D(cache_dir if cache_dir is not None else default_cache_dir())
    return load_peer_model(kind, data_root).to(device).denoise


def timed(denoise: Denoise) -> tuple[Denoise, Callable[[], tuple[float, float]]]:
    """Wrap a `Denoise` to count wall seconds and megapixels spent inside it; the second value reads (s, MP).

    For CBM3D the seconds are those of the original computation, also for outputs served from its cache.
    """
    total = {"seconds": 0.0, "mp": 0.0}
    if isinstance(denoise, CBM3D):
        return denoise, lambda: (denoise.seconds, denoise.megapixels)

    def wrapped(noisy: np.ndarray, sigma: float) -> np.ndarray:
        start = time.perf_counter()
        out = denoise(noisy, sigma)
        total["seconds"] += time.perf_counter() - start
        total["mp"] += noisy.shape[0] * noisy.shape[1] / 1e6
        return out

    return wrapped, lambda: (total["seconds"], total["mp"])

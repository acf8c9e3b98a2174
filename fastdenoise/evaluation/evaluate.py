"""Denoising quality on a folder of clean images: per-image and mean PSNR/SSIM at several noise levels."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastdenoise.backends import Backend
from fastdenoise.images import list_images, load_rgb
from fastdenoise.metrics import psnr, ssim
from fastdenoise.noise import add_noise, store_jpeg, to_uint8

Denoise = Callable[[np.ndarray, float], np.ndarray]  # (noisy float32 HxWx3, sigma) -> denoised float HxWx3


@dataclass
class EvalResult:
    """Scores of one method on one folder: rows of (image, sigma, psnr, ssim, noisy_psnr)."""

    method: str
    data: str
    seed: int
    rows: list[dict] = field(default_factory=list)

    def mean(self, sigma: float, key: str = "psnr") -> float:
        return float(np.mean([r[key] for r in self.rows if r["sigma"] == sigma]))

    @property
    def sigmas(self) -> list[float]:
        return sorted({r["sigma"] for r in self.rows})


def output_key(noisy: np.ndarray, sigma: float, tag: str = "") -> str:
    """The cache key of a denoiser's output: SHA-256 of the float32 noisy input, its shape, sigma and `tag` (what
    else the output depends on, e.g. a package version)."""
    digest = hashlib.sha256(np.ascontiguousarray(noisy, dtype=np.float32).tobytes())
    digest.update(f"{noisy.shape}|{float(sigma)!r}{'|' + tag if tag else ''}".encode())
    return digest.hexdigest()


def backend_denoiser(backend: Backend) -> Denoise:
    """Wrap a backend as a per-image (H, W, 3) float -> float function."""

    def denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
        x = torch.from_numpy(noisy).permute(2, 0, 1)[None].to(backend.device)
        return backend(x)[0].permute(1, 2, 0).cpu().numpy()

    return denoise


def evaluate(
    denoise: Denoise,
    folder: Path,
    sigmas: list[float],
    seed: int = 0,
    method: str = "fastdenoise",
    with_ssim: bool = True,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    jpeg: int | None = None,
) -> EvalResult:
    """Noise each image of the sorted folder per the protocol (image i, seed [seed, i]), denoise, score.

    jpeg: store each noisy image as JPEG at this quality (`noise.store_jpeg`) before it is denoised and scored."""
    paths = list_images(Path(folder))[:limit]
    if not paths:
        raise ValueError(f"{folder}: no images found")
    result = EvalResult(method, str(folder), seed)
    for sigma in sigmas:
        for i, path in enumerate(paths):
            clean = load_rgb(path)
            noisy = add_noise(clean, sigma, seed, i)
            noisy = store_jpeg(noisy, jpeg) if jpeg is not None else noisy
            out = to_uint8(denoise(noisy, sigma))
            row = {
                "image": path.name,
                "sigma": sigma,
                "psnr": psnr(out, clean),
                "noisy_psnr": psnr(to_uint8(noisy), clean),
            } | ({"jpeg": jpeg} if jpeg is not None else {})
            if with_ssim:
                row["ssim"] = ssim(out, clean)
            result.rows.append(row)
            if progress:
                progress(f"{method} sigma {sigma:g} {path.name}: {row['psnr']:.2f} dB")
    return result


def markdown_table(results: list[EvalResult], key: str = "psnr") -> str:
    """One row per method, one column per sigma: mean PSNR (dB) or SSIM."""
    sigmas = sorted({s for r in results for s in r.sigmas})
    lines = ["| method | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |", "|---" * (len(sigmas) + 1) + "|"]
    for r in results:
        cells = [f"{r.mean(s, key):.4f}" if key == "ssim" else f"{r.mean(s, key):.2f}" for s in sigmas]
        lines.append(f"| {r.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(results: list[EvalResult], out: Path, meta: dict | None = None) -> None:
    """eval.json (per-image rows and means) and eval.md (mean tables) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta or {},
        "results": [
            {
                "method": r.method,
                "data": r.data,
                "seed": r.seed,
                "mean": {
                    str(s): {"psnr": r.mean(s), **({"ssim": r.mean(s, "ssim")} if "ssim" in r.rows[0] else {})}
                    for s in r.sigmas
                },
                "rows": r.rows,
            }
            for r in results
        ],
    }
    (out / "eval.json").write_text(json.dumps(payload, indent=1))
    parts = [
        f"# Evaluation on {results[0].data}",
        "",
        "Noise: Gaussian, per-image seed [seed, i], noisy input not clipped; "
        f"output clipped and rounded to uint8; PSNR over RGB. Seed {results[0].seed}.",
        "",
        "## PSNR (dB)",
        "",
        markdown_table(results),
    ]
    if "ssim" in results[0].rows[0]:
        parts += ["", "## SSIM", "", markdown_table(results, "ssim")]
    (out / "eval.md").write_text("\n".join(parts) + "\n")

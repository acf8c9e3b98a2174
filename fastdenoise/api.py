"""The Python API: `load` a model and denoise images in memory (numpy arrays, Pillow images, torch tensors), or
`denoise_folder` as `fastdenoise run` does, with its manifest, resume and atomic writes. Both put the library together
as the command line does (`zoo.plan_weights`, `backends.build_backend`, `pipeline.job`).

>>> import numpy as np
>>> import fastdenoise
>>> model = fastdenoise.load("blind")  # eager, on the CPU
>>> noisy = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
>>> model.denoise(noisy).shape, model.denoise(noisy).dtype
((48, 64, 3), dtype('uint8'))
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastdenoise.backends import Backend, BackendConfig, build_backend, load_network
from fastdenoise.models.catalog import MODELS, BundledModel, bundled_model
from fastdenoise.models.checkpoint import load_denoiser
from fastdenoise.models.zoo import choose_weights, estimate_sigma, grid_level, plan_weights
from fastdenoise.noise import check_sigma
from fastdenoise.pipeline.inference import NON_FINITE, GroupError, denoise_floats, denoise_group
from fastdenoise.pipeline.job import prepare_job
from fastdenoise.pipeline.runner import RunConfig
from fastdenoise.pipeline.runner import denoise_folder as run_folder
from fastdenoise.pipeline.summary import RunSummary

__all__ = ["ImageDenoiser", "denoise_folder", "load"]


class ImageDenoiser:
    """A loaded model (`load`): `denoise(image, sigma=None)` takes an (H, W, 3) or (N, H, W, 3) numpy array (uint8,
    or float in [0, 1]), a Pillow image or a tensor of shape (3, H, W) or (N, 3, H, W) (float in [0, 1], or uint8),
    and returns the same kind, shape and dtype. 8-bit images take `fastdenoise run`'s path (tiles above `tile`
    pixels, grey stays grey): the pixels its PNG outputs hold for the same backend and precision. Floats come back
    unrounded, clipped to [0, 1].

    sigma (0-255 units): a noise-map model needs it; on the default model (`blind`) it picks the bundled per-sigma
    model within 7.5 of it, as `fastdenoise run --sigma S` does (blind beyond); other models take none."""

    def __init__(
        self,
        weights: Path,
        backend: BackendConfig,
        model: BundledModel | None = None,
        ensemble: bool = False,
        tile: int = 1024,
        overlap: int = 64,
        batch: int = 4,
    ) -> None:
        self.weights, self.model, self.config, self.ensemble = Path(weights), model, backend, ensemble
        self.cfg = RunConfig(tile=tile, overlap=overlap, batch=batch)  # checks them
        self.network = load_denoiser(self.weights)
        self.built: dict[tuple[Path, float | None], Backend] = {}
        if not self.network.spec.noise_map:  # built now: a backend that cannot run here fails in `load`
            self.built[self.weights, None] = build_backend(self.network, backend, ensemble)

    def __repr__(self) -> str:
        name = self.model.name if self.model else str(self.weights)
        return f"ImageDenoiser({name!r}, backend={self.config.kind.value!r}, device={self.config.device!r})"

    def backend_at(self, sigma: float | None = None) -> Backend:
        """The backend an image at noise level `sigma` (None: unknown) runs on, built on first use."""
        if isinstance(sigma, str):
            raise ValueError(f"sigma {sigma!r}: give a noise level in 0-255, or 'auto' to denoise")
        if sigma is not None:
            sigma = check_sigma(float(sigma))
        if self.network.spec.noise_map:
            if sigma is None:
                raise ValueError(f"{self.weights}: this model takes the noise level: denoise(image, sigma=S), 0-255")
            key = (self.weights, sigma)
        elif sigma is None:
            key = (self.weights, None)
        elif self.model is not None and self.model.default:
            key = (choose_weights(None, None, sigma), None)  # the per-sigma model within reach, else this one
        else:
            raise ValueError(
                f"{self.weights.stem}: a blind model takes no sigma (noise-map models and the default "
                "model, which picks the per-sigma model for it, do)"
            )
        if key not in self.built:
            self.built[key] = build_backend(load_network(*key), self.config, self.ensemble)
        return self.built[key]

    def denoise(self, image: Any, sigma: float | str | None = None) -> Any:
        """The denoised image, of the same kind, shape and dtype as `image` (numpy, Pillow or torch). `sigma`: the
        noise level (0-255) where known, or "auto": each image's own level, estimated as `run --sigma auto` does.

        >>> import torch
        >>> model = load("blind")
        >>> noisy = torch.rand(1, 3, 40, 56)
        >>> model.denoise(noisy).shape
        torch.Size([1, 3, 40, 56])
        >>> from PIL import Image
        >>> model.denoise(Image.new("RGB", (64, 48), (120, 90, 60))).size
        (64, 48)
        """
        if isinstance(sigma, str) and sigma.strip().lower() == "auto":
            return self.denoise_estimated(image)
        backend = self.backend_at(sigma)
        if isinstance(image, np.ndarray):
            return self.denoise_array(backend, image)
        if isinstance(image, torch.Tensor):
            return self.denoise_tensor(backend, image)
        from PIL import Image

        if isinstance(image, Image.Image):
            from fastdenoise.images import pil_rgb

            return Image.fromarray(self.denoise_uint8(backend, pil_rgb(image)[None])[0])
        raise TypeError(f"denoise takes a numpy array, a PIL image or a torch tensor, not {type(image).__name__}")

    def estimate_sigma(self, image: Any) -> float:
        """The noise level (0-255) `sigma="auto"` denoises one image at: (H, W, 3) numpy, (3, H, W) tensor, Pillow."""
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().permute(1, 2, 0).numpy()
        elif not isinstance(image, np.ndarray):
            from fastdenoise.images import pil_rgb

            image = pil_rgb(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected one RGB image, (H, W, 3) or (3, H, W), got shape {image.shape}")
        return estimate_sigma(image)

    def denoise_estimated(self, image: Any) -> Any:
        """`denoise(image, sigma="auto")`: each image of a batch at its own estimate, routed as `run --sigma auto`
        routes it: a noise-map model bound to the estimate on run's grid, the default model to the per-sigma model
        within reach of it; other models take no sigma."""
        if isinstance(image, np.ndarray | torch.Tensor) and image.ndim == 4:
            outputs = [self.denoise_estimated(one) for one in image]
            return np.stack(outputs) if isinstance(image, np.ndarray) else torch.stack(outputs)
        level = self.estimate_sigma(image)
        return self.denoise(image, grid_level(level) if self.network.spec.noise_map else level)

    def denoise_array(self, backend: Backend, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) or (N, H, W, 3) uint8 or float -> the same, denoised."""
        batch = image[None] if image.ndim == 3 else image
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) or (N, H, W, 3) RGB array, got shape {image.shape}")
        if image.dtype == np.uint8:
            out = self.denoise_uint8(backend, batch)
        elif np.issubdtype(image.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).permute(0, 3, 1, 2)
            out = self.denoise_float(backend, x).permute(0, 2, 3, 1).numpy().astype(image.dtype)
        else:
            raise ValueError(f"expected a uint8 or float array, got {image.dtype}")
        return out[0] if image.ndim == 3 else out

    def denoise_tensor(self, backend: Backend, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) or (N, 3, H, W) float or uint8 -> the same, denoised, on the tensor's device."""
        batch = image[None] if image.ndim == 3 else image
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (3, H, W) or (N, 3, H, W) RGB tensor, got shape {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            out = torch.from_numpy(self.denoise_uint8(backend, batch.permute(0, 2, 3, 1).cpu().numpy()))
            out = out.permute(0, 3, 1, 2).contiguous().to(image.device)
        elif image.is_floating_point():
            out = self.denoise_float(backend, batch.detach()).to(image.device, image.dtype)
        else:
            raise ValueError(f"expected a float or uint8 tensor, got {image.dtype}")
        return out[0] if image.ndim == 3 else out

    def denoise_uint8(self, backend: Backend, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> denoised, as the folder run denoises (`inference.denoise_group`), `batch` at once."""
        step = 1 if max(batch.shape[1:3]) > self.cfg.tile else self.cfg.batch  # larger than the tile: one at a time
        outputs = []
        for start in range(0, len(batch), step):
            try:
                results, _, problems = denoise_group(
                    backend, None, list(batch[start : start + step]), self.cfg, defaultdict(float)
                )
            except GroupError as err:
                raise RuntimeError(str(err)) from err
            if any(problems):
                raise ValueError(NON_FINITE)
            outputs.append(results)
        return np.concatenate(outputs)

    def denoise_float(self, backend: Backend, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> denoised float32 on the CPU, clipped to [0, 1]."""
        y = denoise_floats(backend, x, self.cfg)
        if not bool(torch.isfinite(y).all()):
            raise ValueError(NON_FINITE)
        return y.clamp(0, 1)  # a plain tensor (the backend's is an inference tensor)


def resolve(name_or_path: str | Path) -> tuple[BundledModel | None, Path]:
    """A bundled model's entry and file (`models.catalog`), or (None, the weights file) for a path."""
    if isinstance(name_or_path, str) and name_or_path in {m.name for m in MODELS}:
        return bundled_model(name_or_path), choose_weights(name_or_path, None, None)
    path = Path(name_or_path)
    if not path.is_file():
        names = ", ".join(m.name for m in MODELS)
        raise ValueError(f"{str(name_or_path)!r} is neither a bundled model ({names}) nor a weights file")
    return None, path


def load(
    name_or_path: str | Path = "blind",
    backend: str = "eager",
    device: str = "cpu",
    precision: str = "auto",
    *,
    ensemble: bool = False,
    engine: str | Path | None = None,
    trust_engine: bool = False,
    tile: int = 1024,
    overlap: int = 64,
    batch: int = 4,
) -> ImageDenoiser:
    """A bundled model by name (blind, sigma25, jpeg, task-aware ...: `models.catalog.MODELS`) or a weights file
    (.safetensors or a training checkpoint), on a backend (eager, compiled, triton, onnxruntime, tensorrt, openvino,
    auto), device (cpu, cuda, cuda:1, auto) and precision (auto, fp32, bf16, fp16, int8), as `fastdenoise run`'s
    options of those names.

    >>> load("sigma25", precision="fp32")
    ImageDenoiser('sigma25', backend='eager', device='cpu')
    """
    model, weights = resolve(name_or_path)
    cfg = BackendConfig(
        kind=backend,
        device=device,
        precision=precision,
        engine=str(engine) if engine else None,
        trust_engine=trust_engine,
    )
    return ImageDenoiser(weights, cfg, model, ensemble, tile, overlap, batch)


def denoise_folder(
    src: str | Path,
    dst: str | Path,
    *,
    model: str | Path | None = None,
    sigma: float | str | None = None,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    ensemble: bool = False,
    engine: str | Path | None = None,
    trust_engine: bool = False,
    task: str | None = None,
    head: str | None = None,
    head_weights: str | Path | None = None,
    top_k: int = 5,
    on_image: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> RunSummary:
    """Denoise every image under src (or one image file) into dst as `fastdenoise run src dst` does, and return the
    run's summary: a manifest.jsonl row per file (a file that fails gets an error row, the others go on), outputs
    written atomically, a second call resuming what a first left undone. The options are `run`'s, with its defaults:
    model (a bundled name or a weights file; default: as `run` chooses), sigma (0-255, or "auto": each image's
    estimate), backend, device, precision, ensemble, engine, trust_engine, task, head, head_weights, top_k, and the
    folder run's (`RunConfig`: format, quality, batch, tile, overlap, overwrite, workers, loader, fail_fast,
    max_pixels, include, exclude, ref). `on_image(row)` is called per manifest row; setting `stop` ends the run after
    the batch in flight. One process, this machine (torchrun shards and Ray are the command's).

    >>> import tempfile
    >>> from pathlib import Path
    >>> from fastdenoise.images import save_rgb
    >>> src, dst = (Path(tempfile.mkdtemp()) / name for name in ("in", "out"))
    >>> save_rgb(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8), src / "a.png")
    >>> summary = denoise_folder(src, dst, backend="eager", device="cpu")
    >>> summary.ok, summary.failed, sorted(p.name for p in dst.iterdir())
    (1, 0, ['a.png', 'manifest.jsonl'])
    """
    auto = isinstance(sigma, str) and sigma.strip().lower() == "auto"
    level = None if sigma is None or auto else check_sigma(float(sigma))  # type: ignore[arg-type]
    if auto and engine is not None:
        raise ValueError("sigma='auto' runs a model per noise level: not with an engine file (yet)")
    if task is None and (head is not None or head_weights is not None):
        raise ValueError("head and head_weights are for task='classify' or 'segment'")
    entry, weights = (None, None) if model is None else resolve(model)
    plan = plan_weights(
        entry.name if entry else None, None if entry else weights, level, auto, task, fixed=engine is not None
    )
    backend_cfg = BackendConfig(
        kind=backend,
        device=device,
        precision=precision,
        engine=str(engine) if engine else None,
        trust_engine=trust_engine,
    )
    job = prepare_job(plan, RunConfig(**options), backend_cfg, ensemble)
    predictor = None
    if task is not None:
        from fastdenoise.pipeline.predictions import TaskConfig, load_predictor

        cfg = TaskConfig(task, head, str(head_weights) if head_weights else None, top_k)
        predictor = load_predictor(cfg, job.backend.device)  # type: ignore[union-attr]
    return run_folder(
        Path(src), Path(dst), job.backend, job.cfg, on_image, stop=stop, predictor=predictor, router=job.router
    )  # type: ignore[arg-type]

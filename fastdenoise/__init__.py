"""fastdenoise: the IJCAI 2018 task-aware denoiser as a fast batch tool, and as a library (`load`, `denoise_folder`:
docs/python-api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastdenoise.api import ImageDenoiser, denoise_folder, load
    from fastdenoise.models.denoiser import Denoiser, DenoiserSpec, fold_bn

__version__ = "0.1.0"
# Each public name and the module it comes from, loaded on first use, not on `import fastdenoise`: the CLI starts
# (and answers Ctrl-C) before torch is imported.
LAZY = {
    "load": "api",
    "denoise_folder": "api",
    "ImageDenoiser": "api",
    "Denoiser": "models.denoiser",
    "DenoiserSpec": "models.denoiser",
    "fold_bn": "models.denoiser",
}
__all__ = list(LAZY)


def __getattr__(name: str) -> Any:
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(f"fastdenoise.{LAZY[name]}"), name)
    raise AttributeError(f"module 'fastdenoise' has no attribute {name!r}")

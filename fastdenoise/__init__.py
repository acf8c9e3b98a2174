"""fastdenoise: the IJCAI 2018 task-aware denoiser as a fast batch tool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastdenoise.models.denoiser import Denoiser, DenoiserSpec, fold_bn

__all__ = ["Denoiser", "DenoiserSpec", "fold_bn"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Loaded on first use, not on `import fastdenoise`: the CLI starts (and answers Ctrl-C) before torch is imported.
    if name in __all__:
        from fastdenoise.models import denoiser

        return getattr(denoiser, name)
    raise AttributeError(f"module 'fastdenoise' has no attribute {name!r}")

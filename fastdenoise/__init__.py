"""fastdenoise: the IJCAI 2018 task-aware denoiser as a fast batch tool."""

from fastdenoise.model import Denoiser, DenoiserSpec, fold_bn

__all__ = ["Denoiser", "DenoiserSpec", "fold_bn"]
__version__ = "0.1.0"

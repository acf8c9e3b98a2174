"""Fused Triton kernels for the denoiser's inference path (installed as fastdenoise.kernels)."""

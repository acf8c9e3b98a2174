"""The networks: the denoiser, the task heads, the bundled models and their weights on disk."""

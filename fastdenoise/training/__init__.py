"""Training: the one `fit` loop, its config and resumable state, samplers, losses and joint training."""

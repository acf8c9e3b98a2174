"""Start the noise-map campaign (issue 25): the paper's network with the noise level as a fourth input channel,
initialised from the bundled `blind` (step 0 computes exactly what it does), trained for sigma 0-75 on CBSD432.

    OMP_NUM_THREADS=1 nohup python campaign/start_cond.py > campaign/cond-p48/stdout.log 2>&1 &
Continue a stopped run with `fastdenoise train --out campaign/cond-p48 --resume` (its config.json holds the spec)."""

from dataclasses import asdict

from fastdenoise.models.denoiser import DenoiserSpec
from fastdenoise.training.fit import TrainConfig, TrainingStopped, train_denoiser

cfg = TrainConfig(
    data="../shared/data/cbsd432",
    out="campaign/cond-p48",
    val="../shared/data/cbsd68",
    sigma=(0.0, 75.0),
    patch=48,
    batch=32,
    steps=1_000_000,
    lr=1e-4,
    schedule="constant",
    ema=0.999,
    val_every=500,
    val_images=12,
    val_sigma=25.0,
    ckpt_every=250,
    seed=2,
    spec=asdict(DenoiserSpec(noise_map=True)),
)
try:
    train_denoiser(cfg, progress=False, init="fastdenoise/weights/blind.safetensors")
except TrainingStopped as stop:  # SIGTERM / Ctrl-C: the step under way finished and last.pt was written
    print(f"stopped at step {stop.step}; continue with: fastdenoise train --out {cfg.out} --resume")
    raise SystemExit(128 + stop.signum) from None

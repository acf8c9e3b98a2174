"""One timed stretch of denoiser training on a lent GPU, in a single call: start from a campaign's weight average,
train with torch.compile + bf16 at a GPU-sized batch until the time budget, stop cleanly, and bring back the
weights, the log and a summary through one output folder.

The stretch is a run of its own (its batch differs from the CPU campaign's), seeded from the campaign's EMA weights;
its weights come back as `model.safetensors` to be evaluated and, if better, to seed the next CPU stretch with --init.

Dry run on the CPU (tiny):
    python campaign/gpu_stretch.py --data ../shared/data/cbsd432 --init campaign/blind/last.pt --out /tmp/gpu \
        --device cpu --seconds 30 --patch 32 --batch 2 --compile off --val-images 2
On the device (data carried in an ignored folder, e.g. .gl/cbsd432 and .gl/cbsd68):
    python campaign/gpu_stretch.py --data .gl/cbsd432 --val .gl/cbsd68 --init campaign/blind/last.pt \
        --out "$OUT/gpu-blind" --seconds 420
Issue 25's call (the noise-map model, sigma 0-75, half the patches stored as JPEG 70-95; first in line for a GPU):
    python campaign/gpu_stretch.py --data .gl/cbsd432 --val .gl/cbsd68 --init fastdenoise/weights/blind.safetensors \
        --noise-map --sigma 0-75 --jpeg 70-95 --out "$OUT/gpu-cond" --seconds 480
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch

from fastdenoise.models.checkpoint import load_checkpoint, load_denoiser, save_weights
from fastdenoise.models.denoiser import with_noise_map
from fastdenoise.training.fit import LOSSES, TrainConfig, TrainingStopped, fit, psnr_validator
from fastdenoise.training.samplers import Batch, PatchSampler, load_folder


class Prefetch:
    """Draws batches on a thread, `depth` ahead, so patch cropping on the CPU overlaps the GPU step.

    Its state is the sampler's as of the last batch drawn ahead: a resumed stretch would skip up to `depth` batches,
    which a one-call stretch never needs."""

    def __init__(self, sampler: PatchSampler, depth: int = 4) -> None:
        self.sampler, self.queue = sampler, queue.Queue(depth)
        threading.Thread(target=self.fill, daemon=True).start()

    def fill(self) -> None:
        while True:
            batch = next(self.sampler)
            pinned = lambda t: None if t is None else t.pin_memory()
            self.queue.put(
                Batch(*map(pinned, (batch.noisy, batch.clean, batch.target, batch.sigma)))
                if torch.cuda.is_available()
                else batch
            )

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> Batch:
        return self.queue.get()

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--val", type=Path, default=None)
    parser.add_argument("--init", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--seconds", type=float, default=420.0, help="training time budget (the call's limit minus set-up)"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--sigma", default="5-60")
    parser.add_argument("--compile", default="on")
    parser.add_argument("--val-images", type=int, default=12)
    parser.add_argument("--noise-map", action="store_true", help="train the noise-map model (blind --init is widened)")
    parser.add_argument("--jpeg", default=None, help="quality range lo-hi: a share of the patches stored as JPEG")
    parser.add_argument("--jpeg-share", type=float, default=0.5)
    args = parser.parse_args()
    lo, hi = (float(v) for v in args.sigma.split("-"))
    model = load_denoiser(args.init)  # a campaign checkpoint gives its weight average
    if args.noise_map and not model.spec.noise_map:
        model = with_noise_map(model)  # step 0 computes what the blind init computes
    jpeg = tuple(int(q) for q in args.jpeg.split("-")) if args.jpeg else None
    cfg = TrainConfig(
        data=str(args.data),
        out=str(args.out),
        val=str(args.val) if args.val else None,
        sigma=(lo, hi),
        patch=args.patch,
        batch=args.batch,
        steps=10**9,
        lr=args.lr,
        schedule="constant",
        ema=args.ema,
        warmup=100,
        val_every=2000,
        val_images=args.val_images,
        ckpt_every=2000,
        log_every=50,
        device=args.device,
        amp="auto",
        compile=args.compile,
        spec=asdict(model.spec),
        jpeg=jpeg,
        jpeg_share=args.jpeg_share,
    )
    sampler = Prefetch(
        PatchSampler(
            load_folder(args.data), cfg.patch, cfg.batch, cfg.sigma, cfg.seed, jpeg=jpeg, jpeg_share=args.jpeg_share
        )
    )
    validate = psnr_validator(args.val, 32.5, args.val_images) if args.val else None
    timer = threading.Timer(args.seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.daemon = True
    start = time.perf_counter()
    timer.start()
    try:
        fit(model, LOSSES[cfg.loss], sampler, cfg, validate, progress=False)
    except TrainingStopped:
        pass  # the budget ran out: fit finished its step and wrote last.pt
    seconds = time.perf_counter() - start
    state = load_checkpoint(args.out / "last.pt")
    final = load_denoiser(args.out / "last.pt")
    save_weights(
        final,
        args.out / "model.safetensors",
        {"config": asdict(cfg), "init": str(args.init), "gpx_seen": state["pixels"] / 1e9},
    )
    rows = [json.loads(line) for line in (args.out / "log.jsonl").read_text().splitlines()]
    rates = [r["mpx_per_s"] for r in rows if "mpx_per_s" in r][1:]  # the first window holds compilation
    summary = {
        "steps": state["step"],
        "gpx_seen": state["pixels"] / 1e9,
        "seconds": seconds,
        "mpx_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
        "val_psnr": (psnr_validator(args.val, 32.5, args.val_images)(final.to(cfg.device)) if args.val else None),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "last.pt").unlink()  # the optimizer state is not needed back; the weights are
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

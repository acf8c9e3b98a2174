"""Calibration of `models.zoo.estimate_sigma` on training photos: the mean raw PCA estimate at each true noise
level (noise added, clipped and rounded to 8 bits as real files are), printed as the table zoo.py interpolates.

Clipping at 0 and 255 makes the raw estimate low at high sigma; texture and JPEG blocking make it high at low sigma.
Fit on training photos only (CBSD432); the error is then measured on other photos (tests/test_zoo.py, docs/training.md).

Usage: OMP_NUM_THREADS=1 python bench/calibrate_sigma.py ../shared/data/cbsd432 --images 24
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastdenoise.images import list_images, load_rgb
from fastdenoise.models.zoo import raw_sigma
from fastdenoise.noise import add_noise, to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    paths = list_images(args.data)
    picks = np.random.default_rng(args.seed).choice(len(paths), args.images, replace=False)
    levels = np.arange(0, 95, 5, dtype=float)
    means = []
    for sigma in levels:
        raw = [raw_sigma(to_uint8(add_noise(load_rgb(paths[i]), sigma, args.seed, int(i)))) for i in picks]
        means.append(float(np.mean(raw)))
        print(f"sigma {sigma:4.0f}: raw mean {means[-1]:6.2f}", flush=True)
    print("CALIBRATION = (")
    print("    (" + ", ".join(f"{m:.2f}" for m in means) + "),  # raw estimate")
    print("    (" + ", ".join(f"{s:.0f}" for s in levels) + "),  # true sigma")
    print(")")


if __name__ == "__main__":
    main()

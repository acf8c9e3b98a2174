"""Error of `fastdenoise.models.zoo.estimate_sigma` on photos it was not calibrated on: noise at 5-75 added, clipped and
rounded to 8 bits; prints mean, mean absolute and 95th-percentile absolute error per level as a Markdown table.

Usage: OMP_NUM_THREADS=1 python bench/sigma_error.py ../shared/data/kodak24 ../shared/data/cbsd68 --limit 24
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastdenoise.images import list_images, load_rgb
from fastdenoise.models.zoo import estimate_sigma
from fastdenoise.noise import add_noise, to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--levels", default="5,15,25,35,50,75")
    args = parser.parse_args()
    print("| set | sigma | mean error | mean abs error | 95% abs error |\n|---|---|---|---|---|")
    for folder in args.folders:
        paths = list_images(folder)[: args.limit]
        for sigma in (float(s) for s in args.levels.split(",")):
            err = np.array(
                [estimate_sigma(to_uint8(add_noise(load_rgb(p), sigma, 0, i))) - sigma for i, p in enumerate(paths)]
            )
            print(
                f"| {folder.name} ({len(paths)}) | {sigma:g} | {err.mean():+.2f} | {np.abs(err).mean():.2f} "
                f"| {np.percentile(np.abs(err), 95):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""The "unlike the training photos" validation set (issue 25): ImageNet photos (objects, animals, products: saturated
colours and hard edges, where CBSD432 holds muted landscapes), never trained on by any denoiser here and outside
the tables' test split, each downscaled 2x (a 2x2 box average) so its JPEG artefacts fall below the 8-bit noise the
protocol adds, and stored as PNG.

Photos: every `step`-th row of the train half of labels.csv (even rows, `tables --split train`), so the classes
spread over the whole list. The tables score denoising on Kodak24 and CBSD68; this set is the third view.

    python bench/unlike_set.py ../shared/data/imagenet-samples runs/unlike24 --count 24
    fastdenoise eval runs/unlike24 --sigma 15,25,50 --model blind -o runs/unlike24-blind
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from fastdenoise.datasets import read_labels
from fastdenoise.evaluation.tables.arms import Split, split_positions


def unlike_names(rows: list[tuple[str, int]], count: int) -> tuple[list[str], int]:
    """The files of the set: every `step`-th train-split row (even rows), the first `count`; and the step."""
    train = split_positions(len(rows), Split.train)
    step = max(1, len(train) // count)
    return [rows[p][0] for p in train[::step][:count]], step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="imagenet-samples (with labels.csv)")
    parser.add_argument("out", type=Path, help="folder for the PNGs (created)")
    parser.add_argument("--count", type=int, default=24)
    args = parser.parse_args()
    rows = read_labels(args.data / "labels.csv")
    picked, step = unlike_names(rows, args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in picked:
        with Image.open(args.data / name) as image:
            small = image.convert("RGB").reduce(2)  # 2x2 box average
        small.save(args.out / f"{Path(name).stem}.png")
    print(f"wrote {len(picked)} photos to {args.out} (every {step}th train-split row, 2x down)")


if __name__ == "__main__":
    main()

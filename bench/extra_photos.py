"""Clean training photos beyond CBSD432 that no table evaluates (issue 25): CamVid's train frames and the ImageNet
samples of the train half (even rows of labels.csv) less the unlike24 validation photos, each 2x down (a 2x2 box
average, so JPEG artefacts and sensor noise fall under the noise training adds), stored as PNG in one folder.

Never taken: CamVid val (Table 3's split), the odd rows of labels.csv (Table 2's test split), the unlike24 rows.

    python bench/extra_photos.py ../shared/data runs/extra-photos
    fastdenoise train ../shared/data/cbsd432 --extra runs/extra-photos ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image
from unlike_set import unlike_names

from fastdenoise.datasets import read_labels
from fastdenoise.evaluation.tables.arms import Split, split_positions
from fastdenoise.images import list_images


def extra_sources(data: Path, unlike_count: int) -> list[tuple[str, Path]]:
    """(output stem, source file) of every extra photo: CamVid train, then ImageNet's train half less unlike24."""
    rows = read_labels(data / "imagenet-samples" / "labels.csv")
    held, _ = unlike_names(rows, unlike_count)
    train = [rows[p][0] for p in split_positions(len(rows), Split.train)]
    imagenet = [("imagenet-" + Path(name).stem, data / "imagenet-samples" / name) for name in train if name not in held]
    camvid = [("camvid-" + path.stem, path) for path in list_images(data / "camvid" / "train")]
    return camvid + imagenet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the shared data folder (camvid/, imagenet-samples/)")
    parser.add_argument("out", type=Path, help="folder for the PNGs (created)")
    parser.add_argument("--unlike-count", type=int, default=24, help="the size of the unlike set left out")
    args = parser.parse_args()
    sources = extra_sources(args.data, args.unlike_count)
    args.out.mkdir(parents=True, exist_ok=True)
    for stem, path in sources:
        with Image.open(path) as image:
            small = image.convert("RGB").reduce(2)
        small.info.pop("icc_profile", None)  # pixels as stored, as every loader here reads them
        small.save(args.out / f"{stem}.png")
    kinds = {kind: sum(stem.startswith(kind) for stem, _ in sources) for kind in ("camvid", "imagenet")}
    print(f"wrote {len(sources)} photos to {args.out} ({kinds['camvid']} CamVid train, {kinds['imagenet']} ImageNet)")


if __name__ == "__main__":
    main()

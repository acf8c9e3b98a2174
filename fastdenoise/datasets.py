"""Files of labelled data: where the shared data folder is, labels CSVs (`file,index`) and segmentation masks; the
demo's sample photos (inside scikit-image, so in every install).
The one rule for finding the data folder and the one parser of each file kind."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

DATA_ENV = "FASTDENOISE_DATA"
SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")  # colour photos inside scikit-image: in every install
TEST_SETS = ("kodak", "cbsd68", "mcmaster", "urban", "unlike")  # names of evaluation folders: never train on them


def is_data_root(folder: Path) -> bool:
    """The shared data folder is marked by its SHA256SUMS index or its weights/ folder."""
    return (folder / "SHA256SUMS").is_file() or (folder / "weights").is_dir()


def data_root(near: Path | None = None) -> Path | None:
    """The shared data folder: $FASTDENOISE_DATA if set; else the nearest folder at or above `near` (a data folder a
    command was given) that is one (`is_data_root`); without `near`, shared/data in or beside the current folder (a
    checkout next to ../shared/data), else the current folder or one above it; None if there is none."""
    if DATA_ENV in os.environ:
        return Path(os.environ[DATA_ENV])
    start = Path(near if near is not None else Path.cwd()).resolve()
    beside = [] if near is not None else [start / "shared" / "data", start.parent / "shared" / "data"]
    return next((folder for folder in (*beside, start, *start.parents) if is_data_root(folder)), None)


def require_data_root(near: Path | None = None) -> Path:
    """`data_root`, or FileNotFoundError saying how to point at the folder."""
    root = data_root(near)
    if root is None:
        where = Path(near if near is not None else Path.cwd())
        raise FileNotFoundError(
            f"{where}: no shared data folder (SHA256SUMS or weights/) here or above; set {DATA_ENV}"
        )
    return root


def read_labels(path: Path) -> list[tuple[str, int]]:
    """Rows (file, class index) of a `file,index` CSV, in file order."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"file", "index"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with a header 'file,index' and one row per image")
    try:
        return [(r["file"], int(r["index"])) for r in rows]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: a row's index is not an integer ({err})") from None


def load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A single-channel class map of the given (H, W) as uint8; ValueError naming the file otherwise."""
    from PIL import Image

    with Image.open(path) as handle:
        mask = np.array(handle)
    if mask.ndim != 2 or mask.shape != tuple(shape):
        raise ValueError(f"{path}: mask {mask.shape} is not a single-channel {tuple(shape)} class map")
    return mask.astype(np.uint8)


def sample_photos() -> dict[str, np.ndarray]:
    """The demo's colour photos, shipped inside scikit-image (no download), as (H, W, 3) uint8 by name."""
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in SAMPLES}


def evaluation_set(folder: str | Path) -> str | None:
    """Why a folder is an evaluation set by its name (Kodak24, CBSD68, McMaster, Urban100, unlike24, CamVid's val),
    None for any other folder."""
    path = Path(folder)
    if any(test in path.name.lower() for test in TEST_SETS):
        return "a test set"
    if path.name.lower() in ("val", "test") and path.parent.name.lower() == "camvid":
        return "CamVid's evaluation split (Table 3)"
    return None

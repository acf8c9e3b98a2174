"""The noisy-JPEG table (issue 25): per set, JPEG quality and sigma, the noisy JPEG itself, `blind` and the JPEG model
(`fastdenoise eval SET --jpeg Q --model blind | --weights JPEG_MODEL`), what `run` gives by default (per image: the
JPEG model where the noisy JPEG's estimated level reaches zoo.JPEG_MIN_SIGMA, `blind` below; the estimate made again
here on the same 8-bit image), with the paired differences (95% bootstrap interval, images better) of the default
over the noisy JPEG and over `blind`.

Reads FOLDER/<set>-q<Q>-blind/eval.json and FOLDER/<set>-q<Q>-jpeg/eval.json (same sets, seed and sigmas).

    python bench/jpeg_table.py runs/jpeg > docs/results/jpeg/table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastdenoise.images import list_images, load_rgb
from fastdenoise.models.zoo import jpeg_gate
from fastdenoise.noise import add_noise, store_jpeg, to_uint8
from fastdenoise.stats import paired_bootstrap


def rows_of(path: Path) -> dict[tuple[float, str], dict]:
    return {(r["sigma"], r["image"]): r for r in json.loads(path.read_text())["results"][0]["rows"]}


def routed_to_jpeg(result: dict, quality: int) -> dict[tuple[float, str], bool]:
    """{(sigma, image): whether `run` gives it the JPEG model}: each noisy JPEG made again (the eval's protocol)."""
    paths = {p.name: (i, p) for i, p in enumerate(list_images(Path(result["data"])))}
    routes = {}
    for row in result["rows"]:
        i, path = paths[row["image"]]
        noisy = store_jpeg(add_noise(load_rgb(path), row["sigma"], result["seed"], i), quality)
        routes[row["sigma"], row["image"]] = jpeg_gate(to_uint8(noisy))[1]
    return routes


def paired(a: np.ndarray, b: np.ndarray) -> str:
    test = paired_bootstrap(a[:, None], b[:, None], lambda sums: sums[:, 0] / len(a), draws=4000)
    return f"{test['diff']:+.2f} [{test['lo']:+.2f}, {test['hi']:+.2f}], {int((a > b).sum())}/{len(a)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    print(
        "| set | quality | sigma | noisy JPEG | `blind` | JPEG model | `run` default (JPEG model on) | "
        "default - noisy [95 %], better on | default - `blind` [95 %], better on |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    for jpeg_run in sorted(args.folder.glob("*-q*-jpeg")):
        name, quality = jpeg_run.name.rsplit("-", 2)[0], jpeg_run.name.rsplit("-", 2)[1]
        blind_run = args.folder / f"{name}-{quality}-blind"
        if not (blind_run / "eval.json").is_file() or not (jpeg_run / "eval.json").is_file():
            continue
        ours, base = rows_of(jpeg_run / "eval.json"), rows_of(blind_run / "eval.json")
        routes = routed_to_jpeg(json.loads((blind_run / "eval.json").read_text())["results"][0], int(quality[1:]))
        for sigma in sorted({s for s, _ in ours}):
            keys = sorted(k for k in ours if k[0] == sigma and k in base)
            model = np.array([ours[k]["psnr"] for k in keys])
            blind = np.array([base[k]["psnr"] for k in keys])
            noisy = np.array([base[k]["noisy_psnr"] for k in keys])
            on = np.array([routes[k] for k in keys])
            default = np.where(on, model, blind)
            means = " | ".join(f"{v.mean():.2f}" for v in (noisy, blind, model))
            print(
                f"| {name} | {quality[1:]} | {sigma:g} | {means} | **{default.mean():.2f}** ({on.sum()}/{len(on)}) | "
                f"{paired(default, noisy)} | {paired(default, blind)} |"
            )


if __name__ == "__main__":
    main()

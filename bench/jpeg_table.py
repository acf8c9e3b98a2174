"""The noisy-JPEG table (issue 25): per set, JPEG quality and sigma, the noisy JPEG itself, `blind` and the JPEG model
(`fastdenoise eval SET --jpeg Q`), with the paired differences (95% bootstrap interval, images better) of the JPEG
model over the noisy JPEG and over `blind`.

Reads FOLDER/<set>-q<Q>-blind/eval.json and FOLDER/<set>-q<Q>-jpeg/eval.json (same sets, seed and sigmas).

    python bench/jpeg_table.py runs/jpeg > docs/results/jpeg/table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastdenoise.stats import paired_bootstrap


def rows_of(path: Path) -> dict[tuple[float, str], dict]:
    return {(r["sigma"], r["image"]): r for r in json.loads(path.read_text())["results"][0]["rows"]}


def paired(a: np.ndarray, b: np.ndarray) -> str:
    test = paired_bootstrap(a[:, None], b[:, None], lambda sums: sums[:, 0] / len(a), draws=4000)
    return f"{test['diff']:+.2f} [{test['lo']:+.2f}, {test['hi']:+.2f}], {int((a > b).sum())}/{len(a)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    print("| set | quality | sigma | noisy JPEG | `blind` | JPEG model | JPEG model - noisy [95 %], better on | "
          "JPEG model - `blind` [95 %], better on |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for jpeg_run in sorted(args.folder.glob("*-q*-jpeg")):
        name, quality = jpeg_run.name.rsplit("-", 2)[0], jpeg_run.name.rsplit("-", 2)[1]
        blind_run = args.folder / f"{name}-{quality}-blind"
        if not (blind_run / "eval.json").is_file() or not (jpeg_run / "eval.json").is_file():
            continue
        ours, base = rows_of(jpeg_run / "eval.json"), rows_of(blind_run / "eval.json")
        for sigma in sorted({s for s, _ in ours}):
            keys = sorted(k for k in ours if k[0] == sigma and k in base)
            model = np.array([ours[k]["psnr"] for k in keys])
            blind = np.array([base[k]["psnr"] for k in keys])
            noisy = np.array([base[k]["noisy_psnr"] for k in keys])
            print(f"| {name} | {quality[1:]} | {sigma:g} | {noisy.mean():.2f} | {blind.mean():.2f} | "
                  f"**{model.mean():.2f}** | {paired(model, noisy)} | {paired(model, blind)} |")  # fmt: skip


if __name__ == "__main__":
    main()

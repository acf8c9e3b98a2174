"""Paired comparison of two `fastdenoise eval` results on the same images and noise: per sigma, the mean PSNR of each,
their mean per-image difference (A - B) with a 95% bootstrap interval and two-sided p (fastdenoise.stats), and on how
many images A is better.

    python bench/paired_eval.py runs/ps/eval-s25-kodak24/eval.json runs/eval-p48-kodak24/eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastdenoise.stats import paired_bootstrap


def per_image(path: Path, method: str | None = None) -> dict[tuple[float, str], float]:
    """{(sigma, image): psnr} of one method of an `eval` JSON (the first, or the one named: a peers' JSON holds
    several)."""
    results = json.loads(path.read_text())["results"]
    found = [r for r in results if method is None or r["method"] == method]
    if not found:
        raise SystemExit(f"error: {path}: no method {method!r} (has {', '.join(r['method'] for r in results)})")
    return {(row["sigma"], row["image"]): row["psnr"] for row in found[0]["rows"]}


def compare(a: dict[tuple[float, str], float], b: dict[tuple[float, str], float]) -> list[dict]:
    rows = []
    for sigma in sorted({s for s, _ in a} & {s for s, _ in b}):
        images = sorted(i for s, i in a if s == sigma and (s, i) in b)
        x = np.array([[a[sigma, i]] for i in images])
        y = np.array([[b[sigma, i]] for i in images])
        test = paired_bootstrap(x, y, lambda sums: sums[:, 0] / len(images), draws=4000)
        rows.append(
            {
                "sigma": sigma,
                "images": len(images),
                "a": float(x.mean()),
                "b": float(y.mean()),
                **test,
                "a_better": int((x > y).sum()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="eval.json of the arm")
    parser.add_argument("b", type=Path, help="eval.json of the control, same data and seed")
    parser.add_argument("--method-a", help="the method of A's JSON (default: its first)")
    parser.add_argument("--method-b", help="the method of B's JSON (default: its first)")
    args = parser.parse_args()
    rows = compare(per_image(args.a, args.method_a), per_image(args.b, args.method_b))
    if not rows:
        raise SystemExit(f"error: {args.a} and {args.b} share no sigma and image")
    for r in rows:
        print(
            f"sigma {r['sigma']:g}: {r['a']:.3f} vs {r['b']:.3f} dB, A - B {r['diff']:+.3f} [{r['lo']:+.3f}, "
            f"{r['hi']:+.3f}], p {r['p']:.4f}, A better on {r['a_better']}/{r['images']}"
        )


if __name__ == "__main__":
    main()

"""The task-aware front: per arm, Kodak24 PSNR (a `tables table1` JSON) against a task metric (a `tables table2` or
`table3` JSON), each with its 95% bootstrap interval; arms are matched by name. Writes front.md and front.png.

Usage: python bench/front.py results/table1-bal/table1.json results/table2-bal/table2.json --metric top1 \
           --psnr-sigma 25 --task-sigma 45 -o results/front-classify
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cell(payload: dict, arm: str, sigma: float) -> dict | None:
    return next(
        (c for c in payload["cells"] if c["arm"] == arm and c["sigma"] == sigma and c.get("subset") is None), None
    )


def front_points(psnr_table: dict, task_table: dict, metric: str, psnr_sigma: float, task_sigma: float) -> list[dict]:
    """(arm, psnr, psnr_ci, metric value, metric_ci) for every arm in both tables at the two noise levels."""
    points = []
    for arm in psnr_table["arms"]:
        a, b = cell(psnr_table, arm, psnr_sigma), cell(task_table, arm, task_sigma)
        if a is not None and b is not None:
            points.append(
                {
                    "arm": arm,
                    "psnr": a["psnr"],
                    "psnr_ci": a.get("psnr_ci"),
                    metric: b[metric],
                    f"{metric}_ci": b.get(f"{metric}_ci"),
                }
            )
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("psnr_table", type=Path)
    parser.add_argument("task_table", type=Path)
    parser.add_argument("--metric", default="top1", help="top1, top5, miou or pixel_acc")
    parser.add_argument("--psnr-sigma", type=float, default=25.0)
    parser.add_argument("--task-sigma", type=float, default=45.0)
    parser.add_argument("-o", "--out", type=Path, default=Path("results/front"))
    args = parser.parse_args()
    psnr_table, task_table = (json.loads(p.read_text()) for p in (args.psnr_table, args.task_table))
    points = front_points(psnr_table, task_table, args.metric, args.psnr_sigma, args.task_sigma)
    if not points:
        raise SystemExit(
            f"no arm is in both tables at sigma {args.psnr_sigma:g} / {args.task_sigma:g}: "
            f"{psnr_table['arms']} vs {task_table['arms']}"
        )
    args.out.mkdir(parents=True, exist_ok=True)

    def interval(ci: list | None, digits: int) -> str:
        return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""

    lines = [f"| arm | PSNR sigma {args.psnr_sigma:g} | {args.metric} sigma {args.task_sigma:g} |", "|---|---|---|"]
    for p in points:
        lines.append(
            f"| {p['arm']} | {p['psnr']:.2f}{interval(p['psnr_ci'], 2)} "
            f"| {p[args.metric]:.3f}{interval(p[f'{args.metric}_ci'], 3)} |"
        )
    (args.out / "front.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    from fastdenoise.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
    for p in points:
        x, y = p["psnr"], p[args.metric]
        xerr = [[x - p["psnr_ci"][0]], [p["psnr_ci"][1] - x]] if p["psnr_ci"] else None
        yerr = [[y - p[f"{args.metric}_ci"][0]], [p[f"{args.metric}_ci"][1] - y]] if p[f"{args.metric}_ci"] else None
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=3)
        ax.annotate(p["arm"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"PSNR (dB) at sigma {args.psnr_sigma:g}")
    ax.set_ylabel(f"{args.metric} at sigma {args.task_sigma:g}")
    ax.grid(alpha=0.3)
    fig.savefig(args.out / "front.png", dpi=120)
    print(f"wrote {args.out / 'front.md'}, {args.out / 'front.png'}")


if __name__ == "__main__":
    main()

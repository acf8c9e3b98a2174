"""Peers' PSNR/SSIM on a folder with our noise protocol (evaluation.evaluate), written as eval.json / eval.md.

    nice -n 15 python bench/eval_peers.py ../shared/data/kodak24 --peers cdncnn-b,cdncnn-25,ffdnet --sigma 25

Reference (../shared/data/README.md, Kodak24, sigma 25, seed 0): CDnCNN-B 32.13, CDnCNN sigma=25 32.35, FFDNet 32.25 dB.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fastdenoise.evaluation.evaluate import evaluate, write_results
from fastdenoise.evaluation.peers import LABELS, PeerKind, make_peer, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="clean images, e.g. ../shared/data/kodak24")
    parser.add_argument(
        "--data", type=Path, default=None, help="shared data folder with weights/ (default: the folder's parent)"
    )
    parser.add_argument(
        "--peers", default="cdncnn-b,cdncnn-25,ffdnet", help=f"comma-separated: {', '.join(k.value for k in PeerKind)}"
    )
    parser.add_argument("--sigma", default="25", help="comma-separated noise levels, 0-255 units")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--ssim", action="store_true", help="also SSIM (slower)")
    parser.add_argument("--out", type=Path, default=Path("results/peers"))
    args = parser.parse_args()
    data = args.data or args.folder.resolve().parent
    sigmas = [float(s) for s in args.sigma.split(",")]
    results = []
    for name in args.peers.split(","):
        kind = PeerKind(name.strip())
        denoise, spent = timed(make_peer(kind, data))
        start = time.perf_counter()
        result = evaluate(denoise, args.folder, sigmas, args.seed, LABELS[kind], with_ssim=args.ssim, limit=args.limit)
        seconds, megapixels = spent()
        results.append(result)
        means = ", ".join(f"sigma {s:g}: {result.mean(s):.2f} dB" for s in sigmas)
        print(
            f"{LABELS[kind]:12s} {means}  "
            f"({megapixels / seconds:.3f} MP/s denoising, {time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    write_results(
        results,
        args.out,
        {"command": "bench/eval_peers.py", "peers": args.peers, "seed": args.seed, "limit": args.limit},
    )
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'eval.md'}")


if __name__ == "__main__":
    main()

"""The machine's measured compute roof: a large square matmul per precision, in GFLOP/s (extra_info['gflops']).
Set against the denoiser's achieved GFLOP/s (extra_info['gflops'] in bench_throughput.py; 441 GFLOP per megapixel).

    nice -n 15 pytest bench/bench_roofline.py --profile quick
"""

from __future__ import annotations

import pytest
import torch

from fastdenoise.benchmark import synchronizer
from fastdenoise.devices import DTYPES


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_matmul_peak(benchmark, precision: str, profile, device) -> None:
    if device.type == "cpu" and precision == "fp16":
        pytest.skip("no native fp16 matmul on CPUs")
    if precision not in ("fp32", *profile.precisions):
        pytest.skip(f"profile {profile.name} does not run {precision}")
    n = profile.matmul_size
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(device, DTYPES[precision]) for _ in range(2))
    sync = synchronizer(device)

    def call() -> None:
        torch.mm(a, b)
        sync()

    call()
    benchmark.group = "matmul peak"
    benchmark.pedantic(call, rounds=5, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info.update(
            n=n, precision=precision, gflops=2 * n**3 / benchmark.stats.stats.min / 1e9, device=str(device)
        )

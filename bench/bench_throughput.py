"""Inference and training throughput on pytest-benchmark: backend x precision x batch x resolution from the chosen
profile (`--profile`, see conftest.py), the naive per-image loop and the CNN/CBM3D peers at the same sizes.

    nice -n 15 pytest bench/bench_throughput.py --profile quick --benchmark-columns=median,rounds

Times are per call (one batch); `extra_info` holds MP/s, images/s and achieved GFLOP/s (441 GFLOP per megapixel for
our network) for the JSON (--benchmark-json / --benchmark-autosave). Unavailable backends skip with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.benchmark import (
    GFLOP_PER_MP,
    ThroughputCase,
    TrainMode,
    backend_unavailable,
    get_profile,
    naive_loop,
    synchronizer,
    train_step,
)
from fastdenoise.model import Denoiser
from fastdenoise.peers import CBM3D, MACS_PER_PIXEL, PeerKind, load_peer_model


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    profile = get_profile(metafunc.config.getoption("--profile"))
    if "case" in metafunc.fixturenames:
        cases = profile.throughput_cases()
        metafunc.parametrize("case", cases, ids=[c.name.replace(" ", "-") for c in cases])
    if "size" in metafunc.fixturenames:
        metafunc.parametrize("size", profile.sizes, ids=[f"{h}x{w}" for h, w in profile.sizes])
    if "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", profile.train_modes, ids=[m.name.replace(" ", "-") for m in profile.train_modes])
    if "peer" in metafunc.fixturenames:
        metafunc.parametrize("peer", profile.peers)


def timed(
    benchmark,
    fn: Callable[[], object],
    rounds: int,
    device: torch.device,
    megapixels: float,
    items: int,
    gflop_per_mp: float,
) -> None:
    """Warm up (compile, build) once, then time `rounds` synchronized calls; rates of the median into extra_info."""
    sync = synchronizer(device)

    def call() -> None:
        fn()
        sync()

    call()
    benchmark.pedantic(call, rounds=rounds, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: ran untimed
        return
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(mp_per_s=megapixels / seconds, items_per_s=items / seconds, gflops=megapixels * gflop_per_mp / seconds,
                                megapixels=megapixels, device=str(device))  # fmt: skip


def test_inference(benchmark, case: ThroughputCase, profile, device, bundled: Denoiser) -> None:
    reason = backend_unavailable(case.backend, case.precision, device)
    if reason:
        pytest.skip(reason)
    backend = make_backend(bundled, BackendConfig(kind=case.backend, device=str(device), precision=case.precision))
    x = torch.rand(case.batch, 3, case.height, case.width, generator=torch.Generator().manual_seed(0)).to(device)
    benchmark.group = f"inference {case.height}x{case.width} b{case.batch}"
    benchmark.extra_info.update(
        backend=case.backend, precision=case.precision, batch=case.batch, height=case.height, width=case.width
    )
    timed(benchmark, lambda: backend(x), profile.rounds, device, case.megapixels, case.batch, GFLOP_PER_MP)


def test_naive_loop(benchmark, size: tuple[int, int], profile, device, bundled: Denoiser) -> None:
    """The baseline: unfolded fp32 model, NCHW, one image per call."""
    h, w = size
    run = naive_loop(bundled, device)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    benchmark.group = f"inference {h}x{w} b1"
    timed(benchmark, lambda: run(x), profile.rounds, device, h * w / 1e6, 1, GFLOP_PER_MP)


def test_peer(benchmark, peer: str, profile, device, data_root) -> None:
    """A peer at the profile's first size, batch 1, fp32 (CBM3D: CPU, one round, no cache)."""
    h, w = profile.sizes[0]
    kind = PeerKind(peer)
    benchmark.group = f"inference {h}x{w} b1"
    if kind == PeerKind.cbm3d:
        cbm3d = CBM3D(cache_dir=None)
        noisy = torch.rand(h, w, 3, generator=torch.Generator().manual_seed(0)).numpy()
        timed(benchmark, lambda: cbm3d(noisy, 25.0), 1, torch.device("cpu"), h * w / 1e6, 1, 0.0)
        return
    model = load_peer_model(kind, data_root).to(device)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)

    def run() -> None:
        with torch.inference_mode():
            model(x, 25.0)

    timed(benchmark, run, profile.rounds, device, h * w / 1e6, 1, 2 * MACS_PER_PIXEL[kind] / 1e3)


def test_train_step(benchmark, mode: TrainMode, profile, device) -> None:
    """One Adam step of MSE training as `fit` runs it (random patches; data loading excluded)."""
    reason = backend_unavailable(
        "compiled" if mode.compile else "eager", "fp32" if mode.amp == "off" else mode.amp, device
    )
    if reason:
        pytest.skip(reason)
    generator = torch.Generator().manual_seed(0)
    n, p = profile.train_batch, profile.train_patch
    clean = torch.rand(n, 3, p, p, generator=generator)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=generator)
    step = train_step(Denoiser(), mode, noisy.to(device), clean.to(device))
    step()  # compile forward and backward, allocate Adam's state (timed() warms up once more)
    benchmark.group = f"train b{n} {p}x{p}"
    benchmark.extra_info.update(compile=mode.compile, amp=mode.amp, batch=n, patch=p)
    timed(benchmark, step, profile.train_rounds, device, n * p * p / 1e6, n, 3 * GFLOP_PER_MP)

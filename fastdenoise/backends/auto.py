"""`--backend auto`: the fastest available backend for this device, chosen by a short timed probe on the first batch
of each shape class and cached on disk per machine, weights, precision and the shape class of the probe's input."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from fastdenoise.backends import Backend, BackendConfig, BackendKind, Precision, make_backend
from fastdenoise.files import atomic_write, note
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.words import plural

PROBE_SIDE = 512  # probe inputs are cropped to at most this side: speed per pixel settles well below it
PROBE_BATCH = 2  # and to at most this many images
PROBE_ROUNDS = 2  # timed calls per candidate after one untimed warm-up (compile, export, allocation)
GRAIN = 64  # shape classes round height and width up to this
PROBE_MIN_MP = 0.05  # smaller batches run eagerly unprobed: a probe would cost more than it could save
PROBE_CLASSES = 3  # shape classes probed per run at most; later new ones take the backend those probes chose most


def candidates(device: torch.device, precision: Precision) -> list[BackendKind]:
    """The backends worth probing here, in the order they are tried (ties go to the first)."""
    if precision == Precision.int8:
        return [BackendKind.openvino]
    kinds = [BackendKind.eager]
    openvino = device.type == "cpu" and importlib.util.find_spec("openvino") is not None
    # torch.compile costs about a minute per shape class on a CPU core and measured slower than OpenVINO on CPUs
    # with and without AMX (docs/performance.md), so where OpenVINO is there it is not worth probing.
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("clang++")
    if device.type == "cuda" or (compiler and not openvino):
        kinds.append(BackendKind.compiled)
    if device.type == "cpu":
        if openvino:
            kinds.append(BackendKind.openvino)
        if importlib.util.find_spec("onnxruntime") and precision in (Precision.auto, Precision.fp32):
            kinds.append(BackendKind.onnxruntime)
    elif device.type == "cuda":
        if importlib.util.find_spec("tensorrt"):
            kinds.append(BackendKind.tensorrt)
        if importlib.util.find_spec("triton"):
            kinds.append(BackendKind.triton)
    return kinds


def probe_input(x: Tensor) -> Tensor:
    """What the probe times: x cut to PROBE_BATCH images of at most PROBE_SIDE^2."""
    return x[:PROBE_BATCH, :, :PROBE_SIDE, :PROBE_SIDE].contiguous()


def shape_class(shape: tuple[int, ...]) -> str:
    """Batch and height x width rounded up to GRAIN: batches of one class run at about the same speed per pixel."""
    n, _, h, w = shape
    return f"b{n}-{-(-h // GRAIN) * GRAIN}x{-(-w // GRAIN) * GRAIN}"


def machine_key(device: torch.device) -> str:
    from fastdenoise.machine import cpu_model

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}-{len(os.sched_getaffinity(0))}cpus-{torch.get_num_threads()}threads"


class AutoBackend:
    """Dispatches each batch to the backend the probe found fastest for its shape class; `ran` counts batches per
    backend name and `why` says how each shape class was decided, for the run summary."""

    def __init__(
        self, model: Denoiser, cfg: BackendConfig, device: torch.device, cache_dir: Path | None = None
    ) -> None:
        from fastdenoise.engines.export import default_cache_dir, weights_sha256
        from fastdenoise.models.denoiser import fold_bn

        if cfg.engine is not None:
            raise ValueError("--engine names a file for one backend; with --backend auto leave it out")
        self.model, self.cfg, self.device = model, cfg, device
        self.kinds = candidates(device, cfg.precision)
        self.cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "auto.json"
        self.prefix = f"{machine_key(device)}|{weights_sha256(fold_bn(model))[:16]}|{device.type}|{cfg.precision.value}"
        self.built: dict[BackendKind, Backend | str] = {}  # a backend, or why it could not be built
        self.chosen: dict[str, BackendKind] = {}
        self.why: dict[str, str] = {}  # shape class -> how its backend was chosen
        self.probed: Counter[BackendKind] = Counter()  # winners of this run's probes
        self.timed: dict[str, tuple[BackendKind, str]] = {}  # probe input class -> its winner, first class probed on it
        self.ran: Counter[str] = Counter()
        self.noted = False  # said that the cache was unusable

    def build(self, kind: BackendKind) -> Backend | str:
        if kind not in self.built:
            try:
                self.built[kind] = make_backend(self.model, dataclasses.replace(self.cfg, kind=kind))
            except (ImportError, ValueError, RuntimeError) as err:  # unavailable here: not a candidate
                self.built[kind] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
        return self.built[kind]

    def probe(self, x: Tensor) -> tuple[BackendKind, dict[str, float | str]]:
        """Time every candidate on x cut to PROBE_BATCH x PROBE_SIDE^2; returns the fastest and MP/s (or why not)."""
        x = probe_input(x)
        megapixels = x.shape[0] * x.shape[2] * x.shape[3] / 1e6
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        speeds: dict[str, float | str] = {}
        for kind in self.kinds:
            backend = self.build(kind)
            if isinstance(backend, str):
                speeds[kind.value] = backend
                continue
            try:
                backend(x)
                best = float("inf")
                for _ in range(PROBE_ROUNDS):
                    sync()
                    start = time.perf_counter()
                    backend(x)
                    sync()
                    best = min(best, time.perf_counter() - start)
            except (ValueError, RuntimeError) as err:
                speeds[kind.value] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
                continue
            speeds[kind.value] = megapixels / best
        timed = {k: v for k, v in speeds.items() if isinstance(v, float)}
        if not timed:
            raise ValueError(f"--backend auto: no backend runs here ({speeds})")
        return BackendKind(max(timed, key=lambda k: timed[k])), speeds

    def choose(self, x: Tensor) -> BackendKind:
        shape = shape_class(tuple(x.shape))
        if shape in self.chosen:
            return self.chosen[shape]
        if x.shape[0] * x.shape[2] * x.shape[3] / 1e6 < PROBE_MIN_MP and BackendKind.eager in self.kinds:
            self.chosen[shape], self.why[shape] = BackendKind.eager, f"under {PROBE_MIN_MP} MP a batch: not probed"
            return BackendKind.eager
        # Classes whose probe input is the same (every batch of >= 2 photos over 512 px, say) share one probe.
        timed = shape_class(tuple(probe_input(x).shape))
        key = f"{self.prefix}|{timed}"
        known = self.read_cache()
        kind = cached_kind(known[key]) if key in known else None
        if key in known and kind is None:
            self.note(f"its entry for this machine, weights and shape ({known[key]!r:.80}) is not a probe's")
        if timed in self.timed:
            kind, first = self.timed[timed]
            self.why[shape] = f"as {first} (the same {timed} probe input)"
        elif kind is not None and kind in self.kinds and not isinstance(self.build(kind), str):
            self.why[shape] = f"cached probe ({speeds_text(known[key].get('mp_per_s', {}))}; {self.cache})"
        elif sum(self.probed.values()) >= PROBE_CLASSES:
            # a folder of many sizes: probes would cost more than they save
            kind = self.probed.most_common(1)[0][0]
            self.why[shape] = f"most chosen by this run's {sum(self.probed.values())} probes: not probed"
        else:
            kind, speeds = self.probe(x)
            self.probed[kind] += 1
            self.timed[timed] = kind, shape
            self.why[shape] = f"probed ({speeds_text(speeds)})"
            known = self.read_cache()  # another process may have written meanwhile
            known[key] = {"chosen": kind.value, "mp_per_s": speeds, "probe_shape": list(probe_input(x).shape)}
            try:
                atomic_write(self.cache, lambda f: f.write(json.dumps(known, indent=1, sort_keys=True).encode()))
            except OSError:
                pass  # an unwritable cache costs a probe next time, nothing else
        for other in self.kinds:  # free the memory of backends no shape class runs on
            built = self.built.get(other)
            if other != kind and other not in self.chosen.values() and built is not None and not isinstance(built, str):
                del self.built[other]
        self.chosen[shape] = kind
        return kind

    def read_cache(self) -> dict:
        """The probe cache; {} where there is none yet, or where it is not one (noted: the next probe rewrites it)."""
        try:
            known = json.loads(self.cache.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            self.note(f"not readable as a probe cache ({type(err).__name__}: {str(err)[:80]})")
            return {}
        if not isinstance(known, dict):
            self.note(f"not a probe cache (a JSON {type(known).__name__})")
            return {}
        return known

    def note(self, problem: str) -> None:
        """Say once per run that the cache was passed over, and why."""
        if not self.noted:
            self.noted = True
            note(f"{self.cache}: {problem}; ignored, probing again (the probe rewrites it)")

    def __call__(self, x: Tensor) -> Tensor:
        kind = self.choose(x)
        backend = self.build(kind)
        assert not isinstance(backend, str)  # choose() only picks built backends
        self.ran[describe_backend(backend, kind.value)] += 1
        return backend(x)

    @property
    def description(self) -> str:
        ran = ", ".join(f"{name} ({plural(count, 'batch', 'batches')})" for name, count in self.ran.most_common())
        shown = list(self.why.items())[:SHOWN_CLASSES]
        why = "; ".join(f"{shape}: {self.chosen[shape].value}, {reason}" for shape, reason in shown)
        hidden = len(self.why) - len(shown)
        more = f"; {plural(hidden, 'more shape class', 'more shape classes')}" if hidden else ""
        return f"auto: {ran or 'nothing ran'}" + (f"; chosen: {why}{more}" if why else "")


def cached_kind(entry: object) -> BackendKind | None:
    """The backend a probe-cache entry chose; None for one no probe wrote (garbage, a foreign or hand-made entry)."""
    try:
        kind = BackendKind(entry["chosen"])  # type: ignore[index]
        speeds = entry.get("mp_per_s", {})  # type: ignore[attr-defined]
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return None if kind is BackendKind.auto or not isinstance(speeds, dict) else kind


SHOWN_CLASSES = 4  # shape classes the summary explains; a folder of many sizes would otherwise print a page


def speeds_text(speeds: dict) -> str:
    """{'eager': 0.09, 'openvino': 0.12, 'onnxruntime': 'ImportError: ...'} -> 'openvino 0.120, eager 0.090 MP/s'."""
    timed = sorted(((v, k) for k, v in speeds.items() if isinstance(v, (int, float))), reverse=True)
    failed = [k for k, v in speeds.items() if not isinstance(v, (int, float))]
    text = ", ".join(f"{k} {v:.3f}" for v, k in timed) + " MP/s" if timed else "nothing timed"
    return text + (f", {', '.join(failed)} unavailable" if failed else "")


def describe_backend(backend: Backend, kind: str) -> str:
    """What ran, for the run summary: auto's choices with their batch counts, else the backend kind and its dtype."""
    if isinstance(backend, AutoBackend):
        return backend.description
    dtype = "int8" if getattr(backend, "int8", False) else str(getattr(backend, "dtype", "")).removeprefix("torch.")
    return f"{kind} {dtype}".strip()

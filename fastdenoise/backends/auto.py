"""`--backend auto`: the fastest available backend for this device. A shape class of input runs on the backend a timed
probe found fastest, or on the machine's known-best backend while no probe has decided. Probes are bounded per run (the
larger of PROBE_FLOOR_S and PROBE_SHARE of the run's predicted compute), cached on disk per machine, architecture,
precision and probe shape, and continued by later runs where one run could not afford every candidate."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from fastdenoise.backends import Backend, BackendConfig, BackendKind, Precision, make_backend
from fastdenoise.backends.probes import ProbeCache, architecture_sha256, speeds_text
from fastdenoise.devices import cpu_has_bf16
from fastdenoise.files import note
from fastdenoise.machine import cpu_has_int8_dot
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.words import plural

PROBE_SIDE = 256  # probe inputs are cropped to at most this side: per-pixel speeds rank the backends as at 512 (bench/)
PROBE_BATCH = 1  # and to at most this many images
PROBE_ROUNDS = 2  # timed calls per candidate after one untimed warm-up (compile, export, allocation)
PROBE_FLOOR_S = 5.0  # a run may always spend this long probing ...
PROBE_SHARE = 0.10  # ... or this share of its predicted compute, whichever is larger
GRAIN = 64  # shape classes round height and width up to this
PROBE_MIN_MP = 0.05  # smaller batches run eagerly unprobed: a probe would cost more than it could save
PROBE_CLASSES = 3  # shape classes probed per run at most; later new ones take the backend those probes chose most
# Seconds a backend takes to build before its first call (2-core AVX2 EPYC under load, bundled weights): what a probe
# of it costs beyond its calls. onnxruntime and OpenVINO build from the ONNX export: EXPORT_S more (40-52 s measured
# there) where it is not on disk yet, which is why a first small run leaves them to later, larger runs.
BUILD_S = {
    BackendKind.eager: 0.0,
    BackendKind.compiled: 60.0,
    BackendKind.triton: 10.0,
    BackendKind.onnxruntime: 0.5,
    BackendKind.openvino: 1.5,
    BackendKind.tensorrt: 120.0,
}
EXPORT_S = 45.0
# Seconds the first int8 build spends quantizing (NNCF on the default calibration's 256 crops): 1-5 min of statistics
# alone on one shared AVX2 core (docs/performance.md); a probe pays it once, then the IR is cached.
QUANTIZE_S = 300.0
EXPORTED = (BackendKind.onnxruntime, BackendKind.openvino)


def candidates(device: torch.device, precision: Precision) -> list[BackendKind]:
    """The backends worth probing here, the machine's known-best first (ties go to the first)."""
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
    best = known_best(kinds, device, precision)
    return [best, *(k for k in kinds if k != best)]


def int8_here(device: torch.device, precision: Precision) -> bool:
    """Whether auto runs OpenVINO in int8: --precision auto on a CPU with VNNI or AMX, where int8 is 1.7-1.8x OpenVINO
    bf16 and the default calibration keeps PSNR within 0.05 dB of fp32 (docs/performance.md); any other --precision
    is kept as given."""
    return precision == Precision.auto and device.type == "cpu" and cpu_has_int8_dot()


def known_best(kinds: list[BackendKind], device: torch.device, precision: Precision) -> BackendKind:
    """What runs while no probe has decided: OpenVINO where the CPU has native bf16 (1.2-1.4x eager bf16 on an
    AVX512-BF16 EPYC, docs/performance.md); eager elsewhere, as it builds at once: on an AVX2 EPYC the exported arms
    cost a 40-52 s ONNX export first and ranked 0.55-2.2x eager in two probes (bench/results/amd-epyc-avx2-1c/
    auto-probe.json); on a GPU compiled and TensorRT cost minutes to build."""
    native_bf16 = precision in (Precision.auto, Precision.bf16) and device.type == "cpu" and cpu_has_bf16()
    if BackendKind.openvino in kinds and (native_bf16 or precision == Precision.int8):
        return BackendKind.openvino
    return BackendKind.eager if BackendKind.eager in kinds else kinds[0]


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


@dataclass
class ProbeLedger:
    """What the auto backends of one run share (--sigma auto builds one per weights): the megapixels the run will
    denoise, the probe seconds spent, each probe key's decision, and what ran."""

    work_mp: float | None = None  # None: unknown, so only PROBE_FLOOR_S is allowed
    spent_s: float = 0.0
    decided: dict[str, tuple[BackendKind, str]] = field(default_factory=dict)  # probe key -> backend, first class
    why: dict[str, str] = field(default_factory=dict)  # shape class -> how its backend was chosen
    chosen: dict[str, BackendKind] = field(default_factory=dict)  # shape class -> backend
    keys: dict[str, str] = field(default_factory=dict)  # shape class -> its probe key
    follow: set[str] = field(default_factory=set)  # probe keys whose first batch is timed, then probed after
    probed: Counter[BackendKind] = field(default_factory=Counter)  # winners of this run's probes
    ran: Counter[str] = field(default_factory=Counter)  # batches per backend description

    def budget_s(self, mp_per_s: float | None) -> float:
        """Probe seconds this run may still spend, its compute predicted at mp_per_s."""
        work_s = (self.work_mp or 0.0) / mp_per_s if mp_per_s else 0.0
        return max(PROBE_FLOOR_S, PROBE_SHARE * work_s) - self.spent_s


class AutoBackend:
    """Dispatches each batch to the backend chosen for its shape class (`choose`); its ledger counts the batches per
    backend and says how each shape class was decided, for the run summary (`description`)."""

    def __init__(self, model: Denoiser, cfg: BackendConfig, device: torch.device, cache_dir=None) -> None:
        from fastdenoise.models.denoiser import fold_bn

        if cfg.engine is not None:
            raise ValueError("--engine names a file for one backend; with --backend auto leave it out")
        self.model, self.cfg, self.device = model, cfg, device
        self.kinds = candidates(device, cfg.precision)
        self.int8 = int8_here(device, cfg.precision)  # OpenVINO's arm is int8: probed and cached apart from bf16's
        self.cache = ProbeCache(cache_dir)
        folded = fold_bn(model)
        precision = "auto-int8" if self.int8 else cfg.precision.value
        self.prefix = f"{machine_key(device)}|{architecture_sha256(folded)[:16]}|{device.type}|{precision}"
        self.built: dict[BackendKind, Backend | str] = {}  # a backend, or why it could not be built
        self.ledger = ProbeLedger()
        self.onnx: Path | None = None  # where the ONNX export is cached (`exported`)
        if self.int8 and not self.quantized() and self.kinds[0] == BackendKind.openvino:
            self.kinds = [*self.kinds[1:], BackendKind.openvino]  # a first batch does not wait minutes for NNCF

    def build(self, kind: BackendKind) -> Backend | str:
        if kind not in self.built:
            cfg = dataclasses.replace(self.cfg, kind=kind)
            if kind == BackendKind.openvino and self.int8:
                cfg = dataclasses.replace(cfg, precision=Precision.int8)
            try:
                self.built[kind] = make_backend(self.model, cfg)
            except (ImportError, ValueError, RuntimeError) as err:  # unavailable here: not a candidate
                self.built[kind] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
        return self.built[kind]

    def time_arm(self, kind: BackendKind, x: Tensor) -> float | str:
        """MP/s of the fastest of PROBE_ROUNDS calls on x after a warm-up, or why the backend does not run here."""
        backend = self.build(kind)
        if isinstance(backend, str):
            return backend
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
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
            return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
        return x.shape[0] * x.shape[2] * x.shape[3] / 1e6 / best

    def cost_s(self, kinds: list[BackendKind], call_s: float) -> float:
        """Predicted seconds to build and time `kinds` (each call as long as call_s), the ONNX export once unless it is
        on disk."""
        export = EXPORT_S if any(k in EXPORTED for k in kinds) and not self.exported() else 0.0
        quantize = QUANTIZE_S if self.int8 and BackendKind.openvino in kinds and not self.quantized() else 0.0
        return export + quantize + sum(BUILD_S.get(k, 0.0) + (1 + PROBE_ROUNDS) * call_s for k in kinds)

    def quantized(self) -> bool:
        """Whether the int8 IR of these weights and the default calibration is in the cache already."""
        from fastdenoise.backends.openvino import default_calibration, int8_ir_name
        from fastdenoise.engines.export import weights_sha256
        from fastdenoise.models.denoiser import fold_bn

        name = int8_ir_name(weights_sha256(fold_bn(self.model)), default_calibration())
        return (self.cache.path.parent / "openvino" / name).is_file()

    def exported(self) -> bool:
        """Whether the fp32 ONNX export that onnxruntime and OpenVINO build from is in the cache already."""
        from fastdenoise.engines.export import denoiser_onnx_path, weights_sha256
        from fastdenoise.models.denoiser import fold_bn

        if self.onnx is None:  # the cache folder auto.json is in: the one the backends export into
            digest = weights_sha256(fold_bn(self.model))
            self.onnx = denoiser_onnx_path(digest, torch.float32, self.cache.path.parent / "onnx")
        return self.onnx.is_file()

    def probe(self, x: Tensor, speeds: dict, guess: BackendKind, hint: float, why: str) -> tuple[dict, list]:
        """Time the candidates not in `speeds` that this run's budget affords (its compute predicted from `guess` at
        `hint` MP/s), and `guess` again with them, so ratios come from one run; returns all speeds and the candidates
        left to later runs."""
        x = probe_input(x)
        call_s = x.shape[0] * x.shape[2] * x.shape[3] / 1e6 / hint
        start, speeds, budget = time.perf_counter(), dict(speeds), self.ledger.budget_s(hint)
        rest, plan = [k for k in self.kinds if k.value not in speeds], []
        retime = (1 + PROBE_ROUNDS) * call_s  # the guess is built already: its calls only
        for kind in rest:
            if retime + self.cost_s([*plan, kind], call_s) <= budget:
                plan.append(kind)
        left = [k for k in rest if k not in plan]
        if plan:
            later = f"; {', '.join(k.value for k in left)} left to later runs" if left else ""
            note(
                f"auto: probing {plan_text([guess, *plan])} for ~{retime + self.cost_s(plan, call_s):.0f} s of this "
                f"run's {budget:.0f} s budget ({why}){later}; cached in {self.cache.path}"
            )
        for kind in [guess, *plan] if plan else ():  # estimates can be wrong: what no longer fits is left too
            if kind != guess and time.perf_counter() - start + self.cost_s([kind], call_s) > budget:
                left.append(kind)
                continue
            speeds[kind.value] = self.time_arm(kind, x)
        self.ledger.spent_s += time.perf_counter() - start if plan else 0.0
        return speeds, left

    def choose(self, x: Tensor) -> BackendKind:
        shape, ledger = shape_class(tuple(x.shape)), self.ledger
        if shape in ledger.chosen:
            return ledger.chosen[shape]
        if x.shape[0] * x.shape[2] * x.shape[3] / 1e6 < PROBE_MIN_MP and BackendKind.eager in self.kinds:
            ledger.chosen[shape], ledger.why[shape] = BackendKind.eager, f"under {PROBE_MIN_MP} MP a batch: not probed"
            return BackendKind.eager
        # Classes whose probe input is the same (every batch of photos over 256 px, say) share one probe.
        key = f"{self.prefix}|{shape_class(tuple(probe_input(x).shape))}"
        if key in ledger.decided:
            kind, first = ledger.decided[key]
            ledger.why[shape] = f"as {first}"
        else:
            kind, ledger.why[shape] = self.decide(x, key)
            ledger.decided[key] = kind, shape
        ledger.keys[shape], ledger.chosen[shape] = key, kind
        for other in self.kinds:  # free the memory of backends no shape class runs on
            built = self.built.get(other)
            if other not in ledger.chosen.values() and built is not None and not isinstance(built, str):
                del self.built[other]
        return kind

    def decide(self, x: Tensor, key: str) -> tuple[BackendKind, str]:
        """The backend for a new probe key, and why: the cache's probe, continued where candidates are left and the
        budget allows; with nothing cached, the known-best backend, timed on its first batch (`follow_up`)."""
        speeds = {k: v for k, v in self.cache.speeds(key).items() if k in {c.value for c in self.kinds}}
        before, pending = dict(speeds), [k for k in self.kinds if k.value not in speeds]
        timed = {k: v for k, v in speeds.items() if isinstance(v, float)}
        many = sum(self.ledger.probed.values()) >= PROBE_CLASSES  # a folder of many sizes: probes cost more
        if not timed and many:
            kind = self.ledger.probed.most_common(1)[0][0]
            return kind, f"most chosen by this run's {sum(self.ledger.probed.values())} probes: not probed"
        if not timed:
            kind = next((k for k in self.kinds if not isinstance(self.build(k), str)), self.kinds[0])
            self.ledger.follow.add(key)
            return kind, "known best here"
        if pending and not many:
            guess = BackendKind(max(timed, key=lambda k: timed[k]))
            speeds, pending = self.probe(x, speeds, guess, timed[guess.value], "continuing the cached probe")
        kind = self.fastest(speeds)
        if speeds != before:
            self.ledger.probed[kind] += 1
            self.cache.store(key, speeds, kind, [k.value for k in pending], list(probe_input(x).shape))
        return kind, decision_text(speeds, before, pending)

    def fastest(self, speeds: dict) -> BackendKind:
        """The fastest timed backend that builds here (a cached one may not, after an uninstall: marked so)."""
        while True:
            timed = {k: v for k, v in speeds.items() if isinstance(v, float)}
            if not timed:
                raise ValueError(f"--backend auto: no backend runs here ({speeds})")
            kind = BackendKind(max(timed, key=lambda k: timed[k]))
            built = self.build(kind)
            if not isinstance(built, str):
                return kind
            speeds[kind.value] = built

    def follow_up(self, x: Tensor, key: str, kind: BackendKind, mp_per_s: float) -> None:
        """After the first batch of a key nothing was cached for: its speed predicts the run's compute, hence the
        probe budget; probe what fits, cache it, and let the key's later batches run on the winner."""
        ledger = self.ledger
        ledger.follow.discard(key)
        pending = [k for k in self.kinds if k != kind]
        speeds, left = self.probe(x, {kind.value: mp_per_s}, kind, mp_per_s, "no probe cached for this shape here")
        if left == pending:  # nothing probed: the batch's speed is what the next run's budget starts from
            why = (
                f"known best here ({kind.value} {mp_per_s:.3f} MP/s as run; {', '.join(k.value for k in left)} "
                "left to later runs)"
            )
        else:
            why = decision_text(speeds, {}, left)
        best = self.fastest(speeds)
        ledger.probed[best] += 1
        self.cache.store(key, speeds, best, [k.value for k in left], list(probe_input(x).shape))
        first = ledger.decided[key][1]
        ledger.decided[key], ledger.why[first] = (best, first), why
        for shape in [s for s, k in ledger.keys.items() if k == key]:
            ledger.chosen[shape] = best

    def __call__(self, x: Tensor) -> Tensor:
        kind = self.choose(x)
        backend = self.build(kind)
        assert not isinstance(backend, str)  # choose() only picks built backends
        self.ledger.ran[describe_backend(backend, kind.value)] += 1
        key = self.ledger.keys.get(shape_class(tuple(x.shape)))
        if key not in self.ledger.follow:
            return backend(x)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        start = time.perf_counter()
        y = backend(x)
        sync()
        self.follow_up(x, key, kind, x.shape[0] * x.shape[2] * x.shape[3] / 1e6 / (time.perf_counter() - start))
        return y

    @property
    def description(self) -> str:
        """'auto: openvino float32 (3 batches); probed eager, openvino in 4.2 s: openvino 0.21, eager 0.18 MP/s'."""
        ledger = self.ledger
        ran = ", ".join(f"{name} ({plural(count, 'batch', 'batches')})" for name, count in ledger.ran.most_common())
        reasons = Counter(reason for shape, reason in ledger.why.items() if not reason.startswith("as "))
        shown = [reason for reason, _ in reasons.most_common(SHOWN_REASONS)]
        hidden = len(reasons) - len(shown)
        more = f"; {plural(hidden, 'other choice', 'other choices')}" if hidden else ""
        took = f"; probes took {ledger.spent_s:.1f} s" if ledger.spent_s else ""
        int8 = f"; {INT8_WHY}" if any(" int8" in name for name in ledger.ran) else ""
        return f"auto: {ran or 'nothing ran'}" + (f"; {'; '.join(shown)}{more}" if shown else "") + int8 + took


INT8_WHY = "int8 as this CPU has VNNI/AMX (within 0.05 dB of fp32; --precision bf16 or fp32 keeps float)"
SHOWN_REASONS = 2  # distinct decisions the summary explains; a folder of many sizes would otherwise print a page


def plan_text(kinds: list[BackendKind]) -> str:
    return plural(len(kinds), "backend", "backends") + f" ({', '.join(k.value for k in kinds)})"


def decision_text(speeds: dict, before: dict, left: list[BackendKind]) -> str:
    """How a probe key was decided: 'probed (openvino 0.21, eager 0.18 MP/s; onnxruntime left to later runs)'."""
    later = f"; {', '.join(k.value for k in left)} left to later runs" if left else ""
    how = "cached" if speeds == before else "probed"
    return f"{how} ({speeds_text(speeds)}{later})"


def share_ledger(backend: object, like: object) -> None:
    """Make the auto backend inside `backend` count into `like`'s ledger: one run's probe budget, decisions and
    summary, whichever weights each image runs (--sigma auto, JPEG inputs)."""
    inner, first = getattr(backend, "backend", backend), getattr(like, "backend", like)
    if isinstance(inner, AutoBackend) and isinstance(first, AutoBackend):
        inner.ledger = first.ledger


def expect_work(backend: object, megapixels: float) -> None:
    """Tell the auto backend inside `backend` how many megapixels the run will denoise: its probe budget."""
    inner = getattr(backend, "backend", backend)  # a SelfEnsemble runs 8 passes of each
    if isinstance(inner, AutoBackend):
        inner.ledger.work_mp = megapixels * (8 if inner is not backend else 1)


def describe_backend(backend: Backend, kind: str) -> str:
    """What ran, for the run summary: auto's choices with their batch counts, else the backend kind and its dtype."""
    inner = getattr(backend, "backend", backend)
    if isinstance(inner, AutoBackend):
        return inner.description
    dtype = "int8" if getattr(backend, "int8", False) else str(getattr(backend, "dtype", "")).removeprefix("torch.")
    return f"{kind} {dtype}".strip()

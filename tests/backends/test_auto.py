"""`--backend auto`: the probe within its budget, the known-best backend before it, the cache continued by later runs,
one ledger per run across weights, and the summary's short `backend:` line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers import SMALL, randomize_bn
from typer.testing import CliRunner

from fastdenoise.backends import BackendConfig, BackendKind, make_backend
from fastdenoise.cli import app
from fastdenoise.images import save_rgb
from fastdenoise.models.denoiser import Denoiser

CPU = torch.device("cpu")
ARMS = [BackendKind.eager, BackendKind.openvino, BackendKind.onnxruntime]


@pytest.fixture(scope="module")
def model() -> Denoiser:
    torch.manual_seed(3)
    return randomize_bn(Denoiser(SMALL))


def batch(seed: int, n: int = 2, h: int = 300, w: int = 420) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def scripted(model, tmp_path, monkeypatch, speeds: dict[BackendKind, float], work_mp: float | None = None):
    """An AutoBackend over ARMS whose timings, probes and first batches alike, are `speeds` (MP/s; probes take no
    time) and whose backends all run the model itself; and the list of the backends its probes timed."""
    from fastdenoise.backends.auto import AutoBackend

    timed: list[BackendKind] = []
    follow_up = AutoBackend.follow_up

    def time_arm(self, kind, x):
        timed.append(kind)
        return speeds[kind]

    monkeypatch.setattr(AutoBackend, "time_arm", time_arm)
    monkeypatch.setattr(
        AutoBackend, "follow_up", lambda self, x, key, kind, _: follow_up(self, x, key, kind, speeds[kind])
    )
    monkeypatch.setattr(AutoBackend, "build", lambda self, kind: model.eval())
    auto = AutoBackend(model, BackendConfig(kind="auto", device="cpu", precision="fp32"), CPU, tmp_path)
    auto.kinds, auto.ledger.work_mp = list(ARMS), work_mp
    return auto, timed


def entries(tmp_path) -> list[dict]:
    return list(json.loads((tmp_path / "auto.json").read_text()).values())


def test_a_small_run_takes_the_known_best_and_a_larger_one_probes_on(model, tmp_path, monkeypatch, capsys) -> None:
    from fastdenoise.backends import auto as auto_module

    # 0.0655 MP probe input at 0.0656 MP/s: 1 s a call, 3 calls a backend; OpenVINO's build and export 2.5 s more
    monkeypatch.setattr(auto_module, "BUILD_S", {k: 0.5 for k in BackendKind} | {BackendKind.eager: 0.0})
    monkeypatch.setattr(auto_module, "EXPORT_S", 2.0)
    speeds = {BackendKind.eager: 0.0656, BackendKind.openvino: 0.09, BackendKind.onnxruntime: 0.05}
    x = batch(1)

    first, timed = scripted(model, tmp_path, monkeypatch, speeds)  # work unknown: the 5 s floor
    with torch.no_grad():
        torch.testing.assert_close(first(x), model.eval()(x))
        first(batch(2))
    assert timed == [] and "auto: probing" not in capsys.readouterr().err  # 3 s again + 5.5 s is over 5 s
    assert first.ledger.why["b2-320x448"] == (
        "known best here (eager 0.066 MP/s as run; openvino, onnxruntime left to later runs)"
    )
    assert first.ledger.ran == {"eager": 2}
    (entry,) = entries(tmp_path)
    assert entry["chosen"] == "eager" and entry["left"] == ["openvino", "onnxruntime"]

    second, timed = scripted(model, tmp_path, monkeypatch, speeds)  # small again: nothing more fits, nothing timed
    with torch.no_grad():
        second(x)
    assert timed == [] and "auto: probing" not in capsys.readouterr().err
    assert second.ledger.why["b2-320x448"] == "cached (eager 0.066 MP/s; openvino, onnxruntime left to later runs)"

    third, timed = scripted(model, tmp_path, monkeypatch, speeds, work_mp=200.0)  # 3000 s of compute: 300 s budget
    with torch.no_grad():
        third(x)
    assert timed == [BackendKind.eager, BackendKind.openvino, BackendKind.onnxruntime]  # eager again: one run's ratios
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "auto: probing" in line]
    assert "probing 3 backends (eager, openvino, onnxruntime) for ~12 s of this run's 305 s budget" in line
    assert "(continuing the cached probe)" in line and str(tmp_path) in line
    (entry,) = entries(tmp_path)
    assert entry["chosen"] == "openvino" and entry["left"] == [] and third.ledger.chosen["b2-320x448"] == "openvino"

    fourth, timed = scripted(model, tmp_path, monkeypatch, speeds, work_mp=200.0)  # complete: never probed again
    with torch.no_grad():
        fourth(x)
    assert timed == [] and fourth.ledger.chosen["b2-320x448"] == BackendKind.openvino


def test_a_first_run_that_affords_a_probe_switches_after_its_first_batch(model, tmp_path, monkeypatch) -> None:
    speeds = {BackendKind.eager: 0.2, BackendKind.openvino: 0.3, BackendKind.onnxruntime: 0.1}
    auto, timed = scripted(model, tmp_path, monkeypatch, speeds, work_mp=1000.0)
    with torch.no_grad():
        for seed in range(3):
            auto(batch(seed))
    assert timed == ARMS and auto.ledger.ran == {"eager": 1, "openvino": 2}
    assert auto.description.startswith("auto: openvino (2 batches), eager (1 batch); probed (openvino 0.300, eager")


def test_the_budget_is_the_larger_of_the_floor_and_a_share_of_the_predicted_compute() -> None:
    from fastdenoise.backends.auto import PROBE_FLOOR_S, PROBE_SHARE, ProbeLedger

    assert ProbeLedger().budget_s(0.1) == PROBE_FLOOR_S  # work unknown
    assert ProbeLedger(work_mp=1.0).budget_s(0.1) == PROBE_FLOOR_S  # 10 s of compute: 1 s < the floor
    assert ProbeLedger(work_mp=100.0).budget_s(0.1) == pytest.approx(PROBE_SHARE * 1000)
    assert ProbeLedger(work_mp=100.0, spent_s=30.0).budget_s(0.1) == pytest.approx(PROBE_SHARE * 1000 - 30)


def test_the_probe_stays_within_a_budget_that_real_calls_use_up(model, tmp_path, monkeypatch) -> None:
    """Timings that take real time: what the probe spends is counted, and candidates past the budget wait."""
    from fastdenoise.backends import auto as auto_module

    monkeypatch.setattr(auto_module, "PROBE_FLOOR_S", 0.65)
    monkeypatch.setattr(auto_module, "BUILD_S", {k: 0.0 for k in BackendKind})
    monkeypatch.setattr(auto_module, "EXPORT_S", 0.0)
    auto, timed = scripted(model, tmp_path, monkeypatch, {k: 0.0655 / 0.1 for k in ARMS})  # 0.1 s a call
    scripted_time = auto_module.AutoBackend.time_arm

    def slow(self, kind, x):
        import time

        time.sleep(0.4)  # longer than the 0.3 s predicted
        return scripted_time(self, kind, x)

    monkeypatch.setattr(auto_module.AutoBackend, "time_arm", slow)
    with torch.no_grad():
        auto(batch(2))
    assert timed == [BackendKind.eager]  # planned with openvino (0.3 + 0.3 s); 0.4 + 0.3 s is over 0.65 s
    assert 0.4 <= auto.ledger.spent_s < 0.65
    assert entries(tmp_path)[0]["left"] == ["onnxruntime", "openvino"]


def test_weights_of_one_architecture_share_one_probe_and_one_summary(model, tmp_path, monkeypatch) -> None:
    from fastdenoise.backends.auto import share_ledger
    from fastdenoise.backends.probes import architecture_sha256

    other = randomize_bn(Denoiser(SMALL))  # other values, same layers: the per-sigma models, the JPEG model
    speeds = {BackendKind.eager: 0.2, BackendKind.openvino: 0.3, BackendKind.onnxruntime: 0.1}
    first, _ = scripted(model, tmp_path, monkeypatch, speeds, work_mp=100.0)
    second, timed = scripted(other, tmp_path, monkeypatch, speeds, work_mp=100.0)
    share_ledger(second, first)
    with torch.no_grad():
        second(batch(3))  # --sigma auto: every image ran on other weights than the default's
        second(batch(4))
    assert architecture_sha256(model) == architecture_sha256(other)
    assert architecture_sha256(Denoiser(SMALL)) != architecture_sha256(Denoiser())
    assert len(timed) == 3  # one probe for both batches
    assert first.description.startswith(
        "auto: eager (1 batch), openvino (1 batch); probed (openvino 0.300, eager 0.200, onnxruntime 0.100 MP/s)"
    ), first.description  # the default weights' backend ran nothing, and says what the others ran


def test_the_description_stays_short_over_many_shape_classes(model, tmp_path, monkeypatch) -> None:
    speeds = {BackendKind.eager: 0.2, BackendKind.openvino: 0.3, BackendKind.onnxruntime: 0.1}
    auto, timed = scripted(model, tmp_path, monkeypatch, speeds, work_mp=500.0)
    with torch.no_grad():
        for i, (h, w) in enumerate([(300, 420), (200, 260), (180, 700), (700, 180), (130, 130), (250, 250)]):
            auto(batch(10 + i, n=1 + i % 3, h=h, w=w))
    assert len(auto.ledger.chosen) == 6 and len(timed) > 3
    assert len(auto.description) <= 200, auto.description
    assert "probes took" in auto.description


@pytest.mark.parametrize("poison", ["bogus-choice", "not-an-entry", "garbage-json"])
def test_auto_ignores_and_rebuilds_a_poisoned_probe_cache_with_a_note(
    model, tmp_path, monkeypatch, capsys, poison
) -> None:
    from fastdenoise.backends.auto import probe_input, shape_class

    speeds = {BackendKind.eager: 0.2, BackendKind.openvino: 0.1, BackendKind.onnxruntime: 0.1}
    auto, timed = scripted(model, tmp_path, monkeypatch, speeds, work_mp=500.0)
    x = batch(9, n=1, h=200, w=260)
    key = f"{auto.prefix}|{shape_class(tuple(probe_input(x).shape))}"
    poisoned = {
        "bogus-choice": json.dumps({key: {"chosen": "bogus", "mp_per_s": {"bogus": 9.0}}}),
        "not-an-entry": json.dumps({key: "eager"}),
        "garbage-json": '{"' + key + '": {"chosen": ',
    }[poison]
    (tmp_path / "auto.json").write_text(poisoned)
    with torch.no_grad():
        torch.testing.assert_close(auto(x), model.eval()(x))
    assert len(timed) == 3  # the poisoned entry was not used: probed again
    assert json.loads((tmp_path / "auto.json").read_text())[key]["chosen"] == "eager"  # and rebuilt
    notes = [line for line in capsys.readouterr().err.splitlines() if "auto: probing" not in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: {tmp_path / 'auto.json'}: ") and "probing again" in notes[0]
    later, timed = scripted(model, tmp_path, monkeypatch, speeds, work_mp=500.0)
    with torch.no_grad():
        later(x)
    assert timed == [] and capsys.readouterr().err == ""  # the rebuilt entry is used, quietly


def test_auto_probes_a_few_shape_classes_then_reuses_their_choice(model, tmp_path, monkeypatch) -> None:
    from fastdenoise.backends.auto import PROBE_CLASSES

    speeds = {BackendKind.eager: 0.2, BackendKind.openvino: 0.3, BackendKind.onnxruntime: 0.1}
    auto, timed = scripted(model, tmp_path, monkeypatch, speeds, work_mp=500.0)
    sizes = [(256, 256), (192, 256), (256, 192), (192, 192), (128, 256)]  # a probe input of its own each
    with torch.no_grad():
        for h, w in sizes:
            auto(torch.rand(2, 3, h, w))
    assert len(timed) == 3 * PROBE_CLASSES == 9
    assert [auto.ledger.chosen[f"b2-{h}x{w}"] for h, w in sizes[PROBE_CLASSES:]] == [BackendKind.openvino] * 2
    assert "; most chosen by this run's 3 probes: not probed" in auto.description


def test_auto_runs_tiny_batches_eagerly_without_a_probe(model, tmp_path, monkeypatch) -> None:
    from fastdenoise.backends.auto import AutoBackend

    monkeypatch.setattr(AutoBackend, "time_arm", lambda *_: pytest.fail("probed a tiny batch"))
    auto = AutoBackend(model, BackendConfig(kind="auto", device="cpu", precision="fp32"), CPU, tmp_path)
    with torch.no_grad():
        auto(torch.rand(2, 3, 30, 41))
    assert not (tmp_path / "auto.json").exists()
    assert auto.description == "auto: eager float32 (1 batch); under 0.05 MP a batch: not probed"


def test_auto_refuses_an_engine_file(model, tmp_path) -> None:
    with pytest.raises(ValueError, match="auto"):
        make_backend(model, BackendConfig(kind="auto", device="cpu", engine=str(tmp_path / "x.onnx")))


def test_the_known_best_backend_runs_first(monkeypatch) -> None:
    from fastdenoise.backends import auto as auto_module
    from fastdenoise.backends import Precision

    kinds = [BackendKind.eager, BackendKind.openvino, BackendKind.onnxruntime]
    monkeypatch.setattr(auto_module, "cpu_has_bf16", lambda: True)
    assert auto_module.known_best(kinds, CPU, Precision.auto) == BackendKind.openvino
    assert auto_module.known_best(kinds, CPU, Precision.fp32) == BackendKind.eager
    monkeypatch.setattr(auto_module, "cpu_has_bf16", lambda: False)
    assert auto_module.known_best(kinds, CPU, Precision.auto) == BackendKind.eager
    assert auto_module.known_best(kinds, CPU, Precision.int8) == BackendKind.openvino
    assert auto_module.known_best([BackendKind.openvino], CPU, Precision.fp32) == BackendKind.openvino


def test_cpu_has_int8_dot_means_vnni_or_amx() -> None:
    from fastdenoise.machine import cpu_has_int8_dot

    assert not cpu_has_int8_dot(["sse4_2", "avx2", "fma", "avx512f", "avx512_bf16"])
    assert all(cpu_has_int8_dot(["avx2", flag]) for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@pytest.mark.parametrize(
    ("vnni", "precision", "openvino_runs"),
    [
        (True, "auto", "int8"),
        (False, "auto", "auto"),  # AVX2 alone: int8 would saturate and gain little, so auto keeps float
        (True, "fp32", "fp32"),  # --precision rules
        (True, "bf16", "bf16"),
    ],
)
def test_auto_runs_openvino_in_int8_only_where_the_cpu_has_vnni_or_amx(
    model, tmp_path, monkeypatch, vnni, precision, openvino_runs
) -> None:
    from fastdenoise.backends import Precision
    from fastdenoise.backends import auto as auto_module

    monkeypatch.setattr(auto_module, "cpu_has_int8_dot", lambda: vnni)
    monkeypatch.setattr(auto_module, "cpu_has_bf16", lambda: False)
    built = []
    monkeypatch.setattr(auto_module, "make_backend", lambda network, cfg: built.append(cfg) or network)
    auto = auto_module.AutoBackend(model, BackendConfig(kind="auto", device="cpu", precision=precision), CPU, tmp_path)

    auto.build(BackendKind.openvino)
    auto.build(BackendKind.eager)

    assert [(cfg.kind, cfg.precision) for cfg in built] == [
        (BackendKind.openvino, Precision(openvino_runs)),
        (BackendKind.eager, Precision(precision)),  # float arms keep the precision asked for
    ]
    assert ("auto-int8" in auto.prefix) == (openvino_runs == "int8")  # its probes are cached apart from bf16's


def test_a_first_int8_build_is_probed_at_its_quantization_cost_not_run_unasked(model, tmp_path, monkeypatch) -> None:
    from fastdenoise.backends import auto as auto_module

    monkeypatch.setattr(auto_module, "cpu_has_int8_dot", lambda: True)
    monkeypatch.setattr(auto_module, "cpu_has_bf16", lambda: True)  # OpenVINO is the known best here ...
    monkeypatch.setattr(auto_module.AutoBackend, "exported", lambda self: True)
    cfg = BackendConfig(kind="auto", device="cpu", precision="auto")
    call_s = float(np.random.default_rng().uniform(0.1, 2.0))

    fresh = auto_module.AutoBackend(model, cfg, CPU, tmp_path)
    fresh_costs = [fresh.cost_s([kind], call_s) for kind in (BackendKind.openvino, BackendKind.eager)]
    monkeypatch.setattr(auto_module.AutoBackend, "quantized", lambda self: True)
    cached = auto_module.AutoBackend(model, cfg, CPU, tmp_path)
    cached_costs = [cached.cost_s([kind], call_s) for kind in (BackendKind.openvino, BackendKind.eager)]

    assert fresh.kinds[-1] == BackendKind.openvino != fresh.kinds[0]  # ... but not before NNCF has quantized once
    assert cached.kinds[0] == BackendKind.openvino
    assert fresh_costs[0] == pytest.approx(cached_costs[0] + auto_module.QUANTIZE_S)
    assert fresh_costs[1] == cached_costs[1]  # eager's build is not the quantization's


def test_the_summary_says_when_auto_ran_int8(model, tmp_path, monkeypatch) -> None:
    from fastdenoise.backends import auto as auto_module

    class Int8:
        int8, dtype = True, torch.float32

        def __call__(self, x):
            return model.eval()(x)

    monkeypatch.setattr(auto_module, "cpu_has_int8_dot", lambda: True)
    monkeypatch.setattr(auto_module, "make_backend", lambda network, cfg: Int8() if cfg.precision == "int8" else model)
    auto = auto_module.AutoBackend(model, BackendConfig(kind="auto", device="cpu", precision="auto"), CPU, tmp_path)
    auto.kinds = [BackendKind.openvino]

    with torch.no_grad():
        auto(batch(4))

    assert auto.description.startswith("auto: openvino int8 (1 batch); ")
    assert auto_module.INT8_WHY in auto.description and "VNNI" in auto.description


def test_expect_work_counts_the_eight_passes_of_an_ensemble(model, tmp_path) -> None:
    from fastdenoise.backends.auto import AutoBackend, expect_work
    from fastdenoise.models.zoo import SelfEnsemble

    auto = AutoBackend(model, BackendConfig(kind="auto", device="cpu", precision="fp32"), CPU, tmp_path)
    expect_work(auto, 3.5)
    assert auto.ledger.work_mp == 3.5
    expect_work(SelfEnsemble(auto), 3.5)
    assert auto.ledger.work_mp == 28.0


def test_run_says_when_it_probes_and_keeps_the_backend_line_short(tmp_path, weights, make_image, monkeypatch):
    """Two candidates that build at once (the second runs eager too, as an ONNX export would take a minute here): the
    first run probes after its first batch and says so in one line; the second reads the cache, silently."""
    from fastdenoise.backends import auto as auto_module

    monkeypatch.setenv("FASTDENOISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(auto_module, "candidates", lambda *_: [BackendKind.eager, BackendKind.onnxruntime])
    monkeypatch.setattr(auto_module, "BUILD_S", {k: 0.0 for k in BackendKind})
    monkeypatch.setattr(auto_module, "EXPORT_S", 0.0)
    eager = auto_module.AutoBackend.build
    monkeypatch.setattr(auto_module.AutoBackend, "build", lambda self, kind: eager(self, BackendKind.eager))
    photos = tmp_path / "photos"
    for i in range(3):
        save_rgb(make_image(200 + 8 * i, 260), photos / f"{i}.png")
    args = [
        "run",
        str(photos),
        str(tmp_path / "out"),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--batch",
        "1",
        "--overwrite",
    ]

    first = CliRunner().invoke(app, args)
    again = CliRunner().invoke(app, args)

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    (probing,) = [line for line in first.output.splitlines() if "auto: probing" in line]
    assert re.fullmatch(
        r"note: auto: probing 2 backends \(eager, onnxruntime\) for ~\d+ s of this run's \d+ s budget "
        r"\(no probe cached for this shape here\); cached in .*",
        probing,
    ), probing
    assert probing.endswith(str(tmp_path / "cache" / "auto.json"))
    (line,) = [line for line in first.output.splitlines() if line.startswith("backend: ")]
    # both candidates run eager: which one the probe keeps after the first batch is down to timing noise
    assert re.fullmatch(
        r"backend: auto: (eager float32 \(3 batches\)|onnxruntime float32 \(2 batches\), eager "
        r"float32 \(1 batch\)); probed \((eager|onnxruntime) [0-9.]+, (eager|onnxruntime) [0-9.]+ "
        r"MP/s\); probes took [0-9.]+ s on cpu; weights: .*",
        line,
    ), line
    assert len(line) - len(str(weights)) <= 160  # 631 characters before; two arms named when the second won
    assert "auto: probing" not in again.output
    (line,) = [line for line in again.output.splitlines() if line.startswith("backend: ")]
    assert re.match(r"backend: auto: (eager|onnxruntime) float32 \(3 batches\); cached \(", line), line
    assert "probes took" not in line

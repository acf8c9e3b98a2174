"""Every backend available here against eager fp32 on the same random input (a tolerance per dtype), int8 through
OpenVINO, and the engine-file checks (`--backend auto`: tests/backends/test_auto.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():  # read when a kernel file is imported (see tests/kernels/conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import SMALL, randomize_bn
from typer.testing import CliRunner

from fastdenoise.backends import BackendConfig, BackendKind, Precision, make_backend
from fastdenoise.cli import app
from fastdenoise.images import save_rgb
from fastdenoise.models.denoiser import Denoiser

# max |backend - eager fp32| over outputs with |residual| ~ 0.3: fp32 is reordering noise; bf16 keeps 8 mantissa bits
# through 16 layers (measured <= 6e-3 with oneDNN and OpenVINO).
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}
NEEDS = {  # backend -> (module it needs, what to install)
    "compiled": (None, None),
    "onnxruntime": ("onnxruntime", "onnxruntime onnx onnxscript"),
    "triton": ("triton", "triton"),
    "openvino": ("openvino", "openvino onnx onnxscript onnxruntime"),
    "tensorrt": ("tensorrt", "tensorrt"),
}


def skip_reason(kind: str, precision: str) -> str | None:
    from fastdenoise.devices import cpu_has_bf16

    module, install = NEEDS.get(kind, (None, None))
    if module and importlib.util.find_spec(module) is None:
        return f"{kind}: pip install {install}"
    if kind in ("openvino", "onnxruntime") and importlib.util.find_spec("onnxscript") is None:
        return f"{kind} runs the ONNX export: pip install onnx onnxscript"
    if kind == "compiled" and not (shutil.which("g++") or shutil.which("clang++")):
        return "torch.compile on CPU needs a C++ compiler"
    if kind == "tensorrt" and not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU"
    if precision == "bf16" and not (torch.cuda.is_available() or cpu_has_bf16()):
        return "no native bf16 on this CPU"
    if precision == "bf16" and kind == "onnxruntime":
        return "onnxruntime has no bfloat16 convolutions"
    return None


@pytest.fixture(scope="module")
def model() -> Denoiser:
    torch.manual_seed(3)
    return randomize_bn(Denoiser(SMALL))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: the model is exported to ONNX once, not once per backend."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTDENOISE_CACHE", str(folder))
        yield folder


# torch.compile takes minutes on one shared core: in the slow run (tests/kernels/test_compile.py covers it too).
KINDS = ["eager", pytest.param("compiled", marks=pytest.mark.slow), "onnxruntime", "triton", "openvino", "tensorrt"]


@pytest.mark.parametrize("precision", list(TOLERANCE))
@pytest.mark.parametrize("kind", KINDS)
def test_backend_matches_eager_fp32(model, cache, kind: str, precision: str) -> None:
    reason = skip_reason(kind, precision)
    if reason:
        pytest.skip(reason)
    if kind == "compiled" and precision == "bf16":
        pytest.skip("compiled bf16 is eager bf16 through inductor: one compiled arm keeps the suite short")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.rand(2, 3, 13, 19, generator=torch.Generator().manual_seed(7)).to(device)  # odd sizes: the pad branch
    with torch.no_grad():
        expected = model.cpu().eval()(x.cpu())

    out = make_backend(model, BackendConfig(kind=kind, device=device, precision=precision))(x)

    assert out.shape == x.shape and out.dtype == torch.float32
    error = (out.cpu() - expected).abs().max().item()
    assert error <= TOLERANCE[precision], f"{kind} {precision}: max |out - eager fp32| = {error:.3g}"
    assert (expected - x.cpu()).abs().max() > 5 * TOLERANCE[precision]  # the network's residual is not negligible


def test_the_parity_test_covers_every_backend_kind() -> None:
    kinds = {k.values[0] if hasattr(k, "values") else k for k in KINDS}
    assert kinds == {k.value for k in BackendKind} - {"auto"}  # auto is one of the others, picked by a probe


def test_triton_parity_runs_in_the_interpreter_here() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU runs the kernels compiled")
    if skip_reason("triton", "fp32") is not None:
        pytest.skip(skip_reason("triton", "fp32"))
    assert os.environ.get("TRITON_INTERPRET") == "1"  # so the parametrized triton case above ran on this CPU


@pytest.mark.skipif(skip_reason("openvino", "fp32") is not None, reason="needs openvino and the ONNX exporter")
def test_openvino_refuses_an_onnx_file_of_other_weights(model, cache) -> None:
    from fastdenoise.engines.export import cached_denoiser_onnx

    torch.manual_seed(4)
    other = cached_denoiser_onnx(randomize_bn(Denoiser(SMALL)), torch.float32, cache / "onnx")

    with pytest.raises(ValueError, match="other weights"):
        make_backend(model, BackendConfig(kind="openvino", device="cpu", precision="fp32", engine=str(other)))


@pytest.mark.skipif(skip_reason("openvino", "fp32") is not None, reason="needs openvino and the ONNX exporter")
def test_openvino_keeps_compiled_shapes_within_a_pixel_budget(model, cache, monkeypatch) -> None:
    from fastdenoise.backends import openvino as openvino_backend
    from fastdenoise.backends.openvino import OpenVinoBackend

    monkeypatch.setattr(openvino_backend, "KEPT_PIXELS", 2000)  # each compiled shape holds ~1 KB a pixel of buffers
    backend = OpenVinoBackend(model, torch.device("cpu"), torch.float32, threads=1)
    generator = torch.Generator().manual_seed(5)
    kept = []
    for n in (1, 2, 4, 1):
        x = torch.rand(n, 3, 20, 28, generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(backend(x), model.eval()(x), atol=1e-4, rtol=0)
        kept.append([shape[0] for shape in backend.compiled])
    assert kept == [[1], [1, 2], [4], [1]]  # 560 + 1120 px fit in 2000; 2240 px only alone, as the newest


def test_int8_only_on_openvino(model) -> None:
    with pytest.raises(ValueError, match="openvino"):
        make_backend(model, BackendConfig(kind="eager", device="cpu", precision="int8"))


# ------------------------------------------------------------------------------------------------------------- int8


@pytest.fixture
def photos(tmp_path, make_image):
    from fastdenoise.images import save_rgb

    folder = tmp_path / "cbsd432"
    folder.mkdir()
    for i in range(4):
        save_rgb(make_image(48, 56), folder / f"{i}.png")
    return folder


@pytest.mark.skipif(
    skip_reason("openvino", "fp32") or importlib.util.find_spec("nncf") is None,
    reason="int8 needs openvino, nncf and the ONNX exporter",
)
def test_int8_quantizes_close_to_fp32_and_is_cached(model, cache, photos, make_image) -> None:
    from fastdenoise.backends.openvino import Calibration, OpenVinoBackend

    cal = Calibration(str(photos), crops=16, size=32)
    fp32 = OpenVinoBackend(model, torch.device("cpu"), torch.float32)
    with pytest.warns(UserWarning, match="dB"):  # it says what it costs
        int8 = OpenVinoBackend(model, torch.device("cpu"), torch.float32, int8=True, calibration=cal)
    x = torch.from_numpy(make_image(40, 44)).permute(2, 0, 1)[None].float() / 255
    x = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    a, b = fp32(x), int8(x)

    assert int8.path.suffix == ".xml" and "FakeQuantize" in int8.path.read_text()
    mse = float(((a - b) ** 2).mean())
    assert 0 < mse and 10 * np.log10(1 / mse) > 30  # quantized, yet within 30 dB PSNR of fp32
    stamp = int8.path.stat().st_mtime_ns
    with pytest.warns(UserWarning):
        again = OpenVinoBackend(model, torch.device("cpu"), torch.float32, int8=True, calibration=cal)
    assert again.path == int8.path and again.path.stat().st_mtime_ns == stamp  # from the cache, not recalibrated
    torch.testing.assert_close(again(x), b)


def test_calibration_refuses_test_sets(tmp_path) -> None:
    from fastdenoise.backends.openvino import Calibration

    with pytest.raises(ValueError, match="test set"):
        Calibration(str(tmp_path / "kodak24"))


def test_calibration_names_a_missing_folder(tmp_path) -> None:
    from fastdenoise.backends.openvino import Calibration, calibration_crops

    with pytest.raises(ValueError, match="absent"):
        calibration_crops(Calibration(str(tmp_path / "absent")))


def test_calibration_crops_are_noisy_training_crops(photos) -> None:
    from fastdenoise.backends.openvino import Calibration, calibration_crops

    crops = calibration_crops(Calibration(str(photos), crops=6, size=24, seed=2))

    assert len(crops) == 6 and all(c.shape == (1, 3, 24, 24) and c.dtype == np.float32 for c in crops)
    assert len({c.tobytes() for c in crops}) == 6
    assert min(c.min() for c in crops) < 0 or max(c.max() for c in crops) > 1  # unclipped noise, as in evaluation


def test_int8_calibrates_on_the_demo_photos_without_a_data_folder(tmp_path, monkeypatch) -> None:
    pytest.importorskip("skimage")
    from fastdenoise.backends.openvino import calibration_crops, default_calibration
    from fastdenoise.datasets import sample_photos

    monkeypatch.setenv("FASTDENOISE_DATA", str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    cal = default_calibration()
    small = dataclasses.replace(cal, crops=5, size=40, seed=int(np.random.default_rng().integers(1000)))

    crops = calibration_crops(small)

    assert cal.folder is None and cal.source == "demo"
    assert len(crops) == 5 and all(c.shape == (1, 3, 40, 40) and c.dtype == np.float32 for c in crops)
    assert calibration_crops(small, list(sample_photos().values()))[0].tobytes() == crops[0].tobytes()


def test_calibration_key_follows_the_photos_not_their_path(photos, tmp_path, make_image) -> None:
    from fastdenoise.backends.openvino import Calibration

    moved = tmp_path / "moved"
    shutil.copytree(photos, moved)
    before = Calibration(str(moved)).key
    save_rgb(make_image(48, 56), moved / "extra.png")

    assert Calibration(str(photos)).key == before != Calibration(str(moved)).key  # the run's own inputs differ
    assert Calibration().key not in (before, Calibration(str(moved)).key)  # the demo photos are a source of their own
    assert Calibration(crops=64).key != Calibration().key


def test_even_spread_spaces_the_noise_over_the_crops() -> None:
    from fastdenoise.backends.openvino import Calibration, calibration_crops

    rng = np.random.default_rng()
    grey = [np.full((64, 64, 3), int(rng.integers(60, 200)), np.uint8)]  # flat: a crop's spread is its noise
    even = Calibration(crops=8, size=48, max_sigma=70.0, spread="even", seed=int(rng.integers(1000)))

    measured = [float(c.std()) * 255 for c in calibration_crops(even, grey)]

    expected = 70.0 * (np.arange(8) + 0.5) / 8
    np.testing.assert_allclose(measured, expected, rtol=0.05)
    with pytest.raises(ValueError, match="spread"):
        Calibration(spread="linear")


@pytest.mark.skipif(skip_reason("openvino", "fp32") is not None, reason="needs openvino and the ONNX exporter")
def test_float_nodes_name_the_ends_the_global_residual_and_the_upsampling(model, cache) -> None:
    import openvino as ov

    from fastdenoise.backends.openvino import Calibration, float_nodes
    from fastdenoise.engines.export import cached_denoiser_onnx
    from fastdenoise.models.denoiser import fold_bn

    graph = ov.Core().read_model(str(cached_denoiser_onnx(fold_bn(model), torch.float32, cache / "onnx")))
    ops = {op.get_friendly_name(): op for op in graph.get_ordered_ops()}
    upsampling = [n for n, op in ops.items() if op.get_type_name() == "ConvolutionBackpropData"]

    ends = float_nodes(graph, Calibration(float_residual=False))
    residual = float_nodes(graph, Calibration(float_residual=True))
    everything = float_nodes(graph, Calibration(float_residual=True, float_upsampling=True))

    assert [ops[n].get_type_name() for n in ends] == ["Convolution", "Convolution"]
    (add,) = set(residual) - set(ends)
    assert ops[add].get_type_name() == "Add" and graph.inputs[0].get_node() in {
        ops[add].input_value(i).get_node() for i in range(2)
    }  # the input image itself goes into it: the global residual
    assert len(upsampling) == 2 and set(everything) == {*residual, *upsampling}
    assert float_nodes(graph, Calibration(float_ends=False, float_residual=False)) == []


# `--engine` names a prebuilt file for the backends that run one: a missing file, or an engine given to a backend
# that would ignore it, is refused before anything runs.


@pytest.mark.parametrize("kind", ["onnxruntime", "tensorrt"])
def test_a_missing_engine_file_is_refused(tmp_path, kind):
    with pytest.raises(ValueError, match="absent.onnx: no such engine file"):
        BackendConfig(kind=kind, engine=str(tmp_path / "absent.onnx"))
    present = tmp_path / "model.onnx"
    present.write_bytes(b"\x08\x07")
    assert BackendConfig(kind=kind, engine=str(present)).engine == str(present)


@pytest.mark.parametrize("kind", ["eager", "compiled", "triton"])
def test_an_engine_for_a_backend_that_builds_its_own_is_refused(tmp_path, kind):
    present = tmp_path / "model.onnx"
    present.write_bytes(b"\x08\x07")
    with pytest.raises(ValueError, match=f"--engine is for the onnxruntime, openvino, tensorrt backends, not {kind}"):
        BackendConfig(kind=kind, engine=str(present))


def test_run_with_a_missing_engine_exits_2_and_writes_nothing(tmp_path, make_image, weights):
    save_rgb(make_image(20, 28), tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), str(out), "--weights", str(weights), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--engine", str(tmp_path / "nope.plan")])
    assert result.exit_code == 2
    assert "nope.plan: no such engine file" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_canonical_device_gives_cuda_its_index(monkeypatch):
    """A tensor on 'cuda' reports 'cuda:N'; backends compare inputs against the canonical device, so the unindexed
    name must become the current index (the Triton backend refused every CUDA input before, seen on an H200)."""
    from fastdenoise.devices import canonical_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert canonical_device("cuda") == torch.device("cuda", 3)
    assert canonical_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert canonical_device("cpu") == torch.device("cpu")
    assert torch.device("cuda") != torch.device("cuda", 0)  # why it is needed


@pytest.mark.skipif(skip_reason("onnxruntime", "fp32") is not None, reason="needs onnx and onnxruntime")
def test_a_garbage_file_in_the_onnx_export_cache_is_exported_again_with_a_note(model, tmp_path, capsys) -> None:
    from fastdenoise.engines.export import cached_denoiser_onnx, onnx_metadata, precision_name, weights_sha256
    from fastdenoise.models.denoiser import fold_bn

    digest = weights_sha256(fold_bn(model))
    path = tmp_path / f"denoiser_{digest[:16]}_{precision_name(torch.float32)}.onnx"
    path.write_bytes(np.random.default_rng(4).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    assert cached_denoiser_onnx(model, torch.float32, tmp_path) == path
    assert onnx_metadata(path)["weights_sha256"] == digest
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"note: {path}: ") and "exporting it again" in notes[0]
    stamp = path.stat().st_mtime_ns
    assert cached_denoiser_onnx(model, torch.float32, tmp_path) == path and path.stat().st_mtime_ns == stamp
    assert capsys.readouterr().err == ""

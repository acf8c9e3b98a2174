"""The model cache: every export, IR and compiled blob used only where its sidecar vouches for it (a foreign or corrupt
entry is rebuilt with one note), the size budget (least recently used entries go) and `fastdenoise cache`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch
from helpers import SMALL, randomize_bn
from typer.testing import CliRunner

from fastdenoise.backends import BackendConfig, make_backend
from fastdenoise.cache import clear, entries, entry_problem, parse_size, trim, write_sidecar
from fastdenoise.cli import app
from fastdenoise.models.denoiser import Denoiser

OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("onnxscript") is not None
needs_openvino = pytest.mark.skipif(not OPENVINO, reason="needs openvino and the ONNX exporter")


@pytest.fixture(scope="module")
def model() -> Denoiser:
    torch.manual_seed(11)
    return randomize_bn(Denoiser(SMALL)).eval()


@pytest.fixture(scope="module")
def other() -> Denoiser:
    torch.manual_seed(12)
    return randomize_bn(Denoiser(SMALL)).eval()


def noisy(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(seed))


def openvino(model: Denoiser, cache, **options):
    from fastdenoise.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(model, torch.device("cpu"), torch.float32, cache_dir=cache, threads=1, **options)


def notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]


# -------------------------------------------------------------------------------------------------- OpenVINO blobs


@needs_openvino
@pytest.mark.parametrize("plant", ["other-weights", "corrupt", "no-sidecar"])
def test_a_foreign_or_corrupt_openvino_blob_is_compiled_again_with_a_note(model, other, tmp_path, capsys, plant):
    x = noisy(3)
    with torch.no_grad():
        expected = model(x)
    theirs = openvino(other, tmp_path / "theirs")
    theirs(x)
    (their_blob,) = (tmp_path / "theirs" / "openvino" / "blobs").glob("*.blob")
    ours = openvino(model, tmp_path / "ours")
    blob = ours.blob_path(tuple(x.shape))
    blob.parent.mkdir(parents=True)
    shutil.copy(their_blob, blob)  # their compiled model under our name
    if plant == "other-weights":
        shutil.copy(their_blob.with_name(their_blob.name + ".json"), blob.with_name(blob.name + ".json"))
    elif plant == "corrupt":
        ours(x)  # a true blob and sidecar first ...
        ours = openvino(model, tmp_path / "ours")
        rng = np.random.default_rng(5)
        blob.write_bytes(rng.integers(0, 256, blob.stat().st_size, dtype=np.uint8).tobytes())  # ... then its bytes
        capsys.readouterr()

    out = ours(x)

    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)  # these weights ran, not the planted blob's
    (line,) = notes(capsys)
    assert line.startswith(f"note: {blob}: ") and line.endswith("; compiling it again")
    assert entry_problem(blob, ours.made_from | {"shape": list(x.shape)}, (blob,)) is None  # rebuilt and vouched for
    again = openvino(model, tmp_path / "ours")
    torch.testing.assert_close(again(x), out)
    assert notes(capsys) == []  # the rebuilt blob is used, quietly


@needs_openvino
def test_openvino_refuses_an_engine_onnx_without_metadata_unless_trusted(model, tmp_path):
    import onnx

    from fastdenoise.engines.export import cached_denoiser_onnx

    proto = onnx.load(str(cached_denoiser_onnx(model, torch.float32, tmp_path / "onnx")))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    cfg = BackendConfig(kind="openvino", device="cpu", precision="fp32", engine=str(foreign))

    with pytest.raises(ValueError, match="no fastdenoise metadata.*--trust-engine"):
        make_backend(model, cfg)
    trusted = make_backend(model, BackendConfig(**{**cfg.__dict__, "trust_engine": True}))
    with torch.no_grad():
        torch.testing.assert_close(trusted(noisy(4)), model(noisy(4)), atol=1e-4, rtol=0)


@needs_openvino
def test_run_openvino_with_a_foreign_engine_exits_2_in_one_line(model, tmp_path, make_image):
    import onnx

    from fastdenoise.engines.export import cached_denoiser_onnx
    from fastdenoise.images import save_rgb
    from fastdenoise.models.checkpoint import save_weights

    weights = tmp_path / "w.safetensors"
    save_weights(model, weights)
    proto = onnx.load(str(cached_denoiser_onnx(model, torch.float32, tmp_path / "onnx")))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    (tmp_path / "in").mkdir()
    save_rgb(make_image(24, 20), tmp_path / "in" / "a.png")

    result = CliRunner().invoke(
        app,
        [
            "run",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--weights",
            str(weights),
            "--backend",
            "openvino",
            "--precision",
            "fp32",
            "--engine",
            str(tmp_path / "foreign.onnx"),
        ],
    )

    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "--trust-engine" in line
    assert not (tmp_path / "out" / "a.png").exists()


# ------------------------------------------------------------------------------------------------------ int8 IR


@pytest.mark.skipif(not OPENVINO or importlib.util.find_spec("nncf") is None, reason="int8 needs openvino and nncf")
def test_a_tampered_int8_ir_is_quantized_again_with_a_note(model, tmp_path, capsys, make_image):
    from fastdenoise.backends.openvino import Calibration
    from fastdenoise.images import save_rgb

    photos = tmp_path / "cbsd432"
    photos.mkdir()
    for i in range(3):
        save_rgb(make_image(40, 48), photos / f"{i}.png")
    cal = Calibration(str(photos), crops=8, size=32)
    x = noisy(6)
    with pytest.warns(UserWarning):
        first = openvino(model, tmp_path / "c", int8=True, calibration=cal)
    expected = first(x)
    ir = first.path
    identity = np.random.default_rng(2).integers(0, 256, ir.with_suffix(".bin").stat().st_size, dtype=np.uint8)
    ir.with_suffix(".bin").write_bytes(identity.tobytes())  # other weights in the pair, the sidecar as it was
    capsys.readouterr()

    with pytest.warns(UserWarning):
        again = openvino(model, tmp_path / "c", int8=True, calibration=cal)

    (line,) = notes(capsys)
    assert line.startswith(f"note: {ir}: ") and line.endswith("; quantizing it again")
    torch.testing.assert_close(again(x), expected)  # quantized again: the same calibration gives the same graph


# ------------------------------------------------------------------------------------------------- ONNX exports


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="needs the ONNX exporter")
def test_an_identity_onnx_with_copied_metadata_in_the_cache_is_exported_again(model, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    from fastdenoise.engines.export import cached_denoiser_onnx, onnx_session

    path = cached_denoiser_onnx(model, torch.float32, tmp_path)
    real = onnx.load(str(path))
    node = helper.make_node("Identity", ["image"], ["output"])
    dims = ["batch", 3, "height", "width"]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name in ("image", "output")]
    graph = helper.make_model(helper.make_graph([node], "identity", io[:1], io[1:]), opset_imports=real.opset_import)
    graph.metadata_props.extend(real.metadata_props)  # claims to be the export of these weights
    onnx.save(graph, str(path))
    capsys.readouterr()

    assert cached_denoiser_onnx(model, torch.float32, tmp_path) == path

    (line,) = notes(capsys)
    assert line.startswith(f"note: {path}: ") and "exporting it again" in line
    x = noisy(8)
    (got,) = onnx_session(path).run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


# ----------------------------------------------------------------------------------------------- budget, listing


def fill(root, rng, sizes: dict[str, int], start: float = 1_700_000_000.0) -> None:
    """Entries of random bytes (each file with a sidecar), used one hour apart in the order given."""
    for k, (name, size) in enumerate(sizes.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        write_sidecar(path, {"kind": "test"}, (path,))
        for made in (path, path.with_name(path.name + ".json")):
            os.utime(made, (start + 3600 * k, start + 3600 * k))


def test_trim_removes_the_least_recently_used_entries_past_the_budget(tmp_path, rng):
    sizes = {f"openvino/blobs/b{k}.blob": int(rng.integers(2000, 5000)) for k in range(5)}
    sizes["onnx/keep.onnx"] = 3000
    fill(tmp_path, rng, {"onnx/keep.onnx": 3000} | {k: v for k, v in sizes.items() if k != "onnx/keep.onnx"})
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "result.json").write_bytes(rng.bytes(50_000))  # not the model cache's
    total = sum(e.size for e in entries(tmp_path))
    budget = total // 2

    gone = trim(tmp_path, budget, keep=(tmp_path / "onnx/keep.onnx",))

    left = entries(tmp_path)
    assert sum(e.size for e in left) <= budget and gone
    assert "onnx/keep" in {e.name for e in left}  # the oldest, yet in use
    order = [f"openvino/blobs/b{k}" for k in range(5)]
    assert [e.name for e in gone] == order[: len(gone)]  # oldest first
    assert all(not path.exists() for e in gone for path in e.files) and (tmp_path / "bench/result.json").exists()


def test_trim_follows_no_link_out_of_the_cache(tmp_path, rng):
    outside = tmp_path / "precious.bin"
    outside.write_bytes(rng.bytes(10_000))
    (tmp_path / "c" / "onnx").mkdir(parents=True)
    (tmp_path / "c" / "onnx" / "x.onnx").symlink_to(outside)
    (tmp_path / "c" / "openvino").symlink_to(tmp_path)  # a linked folder is an entry, not walked

    trim(tmp_path / "c", 0)

    assert outside.read_bytes() and not (tmp_path / "c" / "onnx" / "x.onnx").is_symlink()
    assert not (tmp_path / "c" / "openvino").is_symlink() and tmp_path.is_dir()


@pytest.mark.parametrize(("text", "size"), [("2G", 2 * 10**9), ("500M", 5 * 10**8), ("1.5g", 15 * 10**8), ("123", 123)])
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_cache_command_lists_trims_and_clears_in_one_line_each(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("FASTDENOISE_CACHE", str(tmp_path))
    sizes = {f"onnx/e{k}.onnx": int(rng.integers(1000, 3000)) for k in range(4)}
    fill(tmp_path, rng, sizes)
    runner = CliRunner()

    listed = runner.invoke(app, ["cache"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert [line.split()[-1] for line in lines[:-1]] == [f"onnx/e{k}" for k in range(4)]  # oldest first
    assert lines[-1].startswith(f"cache: {tmp_path}: 4 entries, ")

    trimmed = runner.invoke(app, ["cache", "--trim", str(sum(sizes.values()) // 2)])
    assert trimmed.exit_code == 0 and trimmed.output.startswith("cache: removed ")
    assert not (tmp_path / "onnx/e0.onnx").exists() and (tmp_path / "onnx/e3.onnx").exists()

    cleared = runner.invoke(app, ["cache", "--clear"])
    assert cleared.exit_code == 0 and cleared.output.strip().splitlines()[0].startswith("cache: removed ")
    assert entries(tmp_path) == [] and runner.invoke(app, ["cache"]).output.startswith(f"cache: {tmp_path}: 0 entries")

    bad = runner.invoke(app, ["cache", "--trim", "lots"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [bad.output.strip()]
    assert bad.output.startswith("error: --trim: 'lots' is not a size")


def test_cache_command_on_a_cache_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "cachefile").write_bytes(b"x")
    monkeypatch.setenv("FASTDENOISE_CACHE", str(tmp_path / "cachefile"))
    result = CliRunner().invoke(app, ["cache", "--clear"])
    assert result.exit_code == 2
    assert (
        result.output.strip() == f"error: {tmp_path / 'cachefile'}: the cache folder is a file; remove it or set "
        "FASTDENOISE_CACHE"
    )
    assert (tmp_path / "cachefile").read_bytes() == b"x"


def test_clear_removes_only_the_model_cache(tmp_path, rng):
    fill(tmp_path, rng, {"onnx/a.onnx": 100, "engines/x_trt10.13.0.35_fp16_k.engine": 200, "openvino/i.xml": 50})
    (tmp_path / "cbm3d").mkdir()
    (tmp_path / "cbm3d" / "out.png").write_bytes(b"kept")
    assert {e.name for e in entries(tmp_path)} == {"onnx/a", "engines/x_trt10.13.0.35_fp16_k", "openvino/i"}
    assert clear(tmp_path)[0] == 3 and entries(tmp_path) == [] and (tmp_path / "cbm3d" / "out.png").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
    reason="needs onnxruntime and the ONNX exporter",
)
def test_a_backend_built_from_the_cache_keeps_it_within_the_budget(model, tmp_path, rng, monkeypatch):
    from fastdenoise.engines.runtime import OnnxRuntimeBackend

    fill(tmp_path, rng, {f"openvino/blobs/old{k}.blob": 40_000 for k in range(6)})
    monkeypatch.setenv("FASTDENOISE_CACHE_MAX", "200K")

    backend = OnnxRuntimeBackend(model, torch.device("cpu"), torch.float32, None, cache_dir=tmp_path)

    left = entries(tmp_path)
    assert sum(e.size for e in left) <= 200_000 and backend.path.is_file()  # the export it runs is kept
    assert "openvino/blobs/old5" in {e.name for e in left} and "openvino/blobs/old0" not in {e.name for e in left}


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
    reason="needs onnxruntime and the ONNX exporter",
)
def test_run_with_a_cache_folder_that_is_a_file_is_one_line(model, tmp_path, monkeypatch, make_image):
    from fastdenoise.images import save_rgb
    from fastdenoise.models.checkpoint import save_weights

    save_weights(model, tmp_path / "w.safetensors")
    save_rgb(make_image(24, 20), tmp_path / "in" / "a.png")
    (tmp_path / "cachefile").write_bytes(b"not a folder")
    monkeypatch.setenv("FASTDENOISE_CACHE", str(tmp_path / "cachefile"))

    result = CliRunner().invoke(
        app,
        [
            "run",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--weights",
            str(tmp_path / "w.safetensors"),
            "--backend",
            "onnxruntime",
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    )

    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'cachefile'}/") and line.endswith(": Not a directory")
    assert not (tmp_path / "out").exists() and (tmp_path / "cachefile").read_bytes() == b"not a folder"


def test_trim_removes_a_killed_writers_old_part_file_but_not_one_being_written(tmp_path, rng):
    folder = tmp_path / "openvino" / "blobs"
    folder.mkdir(parents=True)
    old, fresh = folder / ".x.blob.a1b2c3d4.part", folder / ".y.blob.e5f6a7b8.part"
    for path in (old, fresh):
        path.write_bytes(rng.bytes(5000))
    os.utime(old, (1_700_000_000, 1_700_000_000))

    trim(tmp_path, 0)

    assert not old.exists() and fresh.exists()

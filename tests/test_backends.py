"""`--engine` names a prebuilt file for the backends that run one: a missing file, or an engine given to a backend
that would ignore it, is refused before anything runs."""

import pytest
from typer.testing import CliRunner

from fastdenoise.backends import BackendConfig
from fastdenoise.cli import app
from fastdenoise.images import save_rgb


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
    with pytest.raises(ValueError, match=f"--engine is for the onnxruntime and tensorrt backends, not {kind}"):
        BackendConfig(kind=kind, engine=str(present))


def test_run_with_a_missing_engine_exits_2_and_writes_nothing(tmp_path, make_image, weights):
    save_rgb(make_image(20, 28), tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), str(out), "--weights", str(weights), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--engine", str(tmp_path / "nope.plan")])
    assert result.exit_code == 2
    assert "nope.plan: no such engine file" in result.output and "Traceback" not in result.output
    assert not out.exists()

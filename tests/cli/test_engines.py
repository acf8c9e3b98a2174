"""`fastdenoise export-onnx` as a user sees it: the file written at OUT, and what it refuses to replace."""

import os
import stat

import pytest
from typer.testing import CliRunner

from fastdenoise.cli import app

runner = CliRunner()


def special_file(path, kind: str) -> None:
    """A FIFO or a character device node (/dev/null's numbers) at path; skips where the system forbids making one."""
    try:
        if kind == "fifo":
            os.mkfifo(path)
        else:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except (OSError, AttributeError) as err:
        pytest.skip(f"cannot make a {kind} here: {err}")


@pytest.mark.parametrize("kind,test", [("fifo", stat.S_ISFIFO), ("device", stat.S_ISCHR)])
def test_export_refuses_to_replace_a_special_file(tmp_path, weights, kind, test):
    target = tmp_path / "model.onnx"
    special_file(target, kind)
    result = runner.invoke(app, ["export-onnx", str(target), "--weights", str(weights), "--exporter", "torchscript"])
    assert result.exit_code == 2, result.output
    what = "a FIFO" if kind == "fifo" else "a character device"
    assert result.output.strip() == f"error: {target}: is {what}, not a regular file; not replaced"
    assert test(os.lstat(target).st_mode) and sorted(os.listdir(tmp_path)) == ["model.onnx", "small.safetensors"]


def test_export_replaces_a_link_and_never_writes_through_it(tmp_path, weights, rng):
    kept = rng.bytes(256)
    (tmp_path / "elsewhere.onnx").write_bytes(kept)
    (tmp_path / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    result = runner.invoke(
        app, ["export-onnx", str(tmp_path / "model.onnx"), "--weights", str(weights), "--exporter", "torchscript"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere.onnx").read_bytes() == kept
    assert (tmp_path / "model.onnx").is_file() and not (tmp_path / "model.onnx").is_symlink()

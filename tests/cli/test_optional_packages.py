"""Optional packages are checked before any work: a peer without its package is left out with a note, build-engine
finds TensorRT missing before exporting ONNX."""

import sys
import types

import pytest
from typer.testing import CliRunner

from fastdenoise.cli import app
from fastdenoise.images import save_rgb

runner = CliRunner()
NO_BM3D = "note: cbm3d skipped: the bm3d package is not installed (pip install bm3d, or fastdenoise[peers])"


@pytest.mark.parametrize("installed", [False, True])
def test_bench_leaves_out_cbm3d_without_bm3d(installed, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from test_benchmark import synthetic_result

    from fastdenoise.evaluation.benchmark import get_profile

    monkeypatch.setitem(sys.modules, "bm3d", types.ModuleType("bm3d") if installed else None)
    seen = {}

    def fake_run(cfg, log=print, profile=None):  # the CLI's part ends where the measuring starts
        seen["peers"] = profile.peers
        return synthetic_result()

    monkeypatch.setattr("fastdenoise.evaluation.benchmark.run_benchmark", fake_run)
    result = runner.invoke(app, ["bench", "--profile", "quick", "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    quick = get_profile("quick").peers
    assert "cbm3d" in quick
    if installed:
        assert seen["peers"] == quick and "note:" not in result.output
    else:
        assert seen["peers"] == tuple(p for p in quick if p != "cbm3d")
        assert result.output.splitlines()[0] == NO_BM3D
    assert (tmp_path / "results" / "test-box" / "quick.json").is_file()


def test_table1_skips_the_cbm3d_peer_without_bm3d(monkeypatch, tmp_path, make_image):
    monkeypatch.setitem(sys.modules, "bm3d", None)
    for i in range(2):
        save_rgb(make_image(24, 32), tmp_path / "kodak" / f"k{i}.png")
    out = tmp_path / "t1"
    result = runner.invoke(
        app,
        [
            "tables",
            "table1",
            str(tmp_path / "kodak"),
            "--peers",
            "cbm3d",
            "--sigma",
            "25",
            "--draws",
            "100",
            "--device",
            "cpu",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == NO_BM3D
    table = (out / "table1.md").read_text()
    assert "fastdenoise (bundled)" in table and "CBM3D" not in table


def test_build_engine_finds_tensorrt_missing_before_exporting(monkeypatch, tmp_path, weights):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setenv("FASTDENOISE_CACHE", str(tmp_path / "cache"))
    exported = []
    monkeypatch.setattr("fastdenoise.engines.export.cached_denoiser_onnx", lambda *a, **k: exported.append(a))
    from fastdenoise.engines.build import INSTALL_HINT

    result = runner.invoke(app, ["build-engine", "--weights", str(weights), "--precision", "fp32"])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [f"error: {INSTALL_HINT}"], result.output
    assert exported == [] and not (tmp_path / "cache").exists()

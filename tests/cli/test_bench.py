"""`fastdenoise bench` writes its results under --out, by default a per-user cache folder, never the current one."""

import pytest
from typer.testing import CliRunner

from fastdenoise.cli import app

runner = CliRunner()


@pytest.mark.parametrize("given", [False, True])
def test_bench_writes_under_out_or_the_cache(given, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from test_benchmark import synthetic_result

    monkeypatch.setenv("FASTDENOISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("fastdenoise.benchmark.run_benchmark", lambda cfg, log=print, profile=None: synthetic_result())
    root = tmp_path / "mine" if given else tmp_path / "cache" / "bench"
    result = runner.invoke(app, ["bench", "--profile", "quick", *(["--out", str(root)] if given else [])])
    assert result.exit_code == 0, result.output
    folder = root / "test-box"
    wrote = next(line for line in result.output.splitlines() if line.startswith("wrote "))
    assert wrote.startswith(f"wrote {folder / 'quick.json'}, {folder / 'quick.txt'}, ")
    assert (folder / "quick.json").is_file() and not (tmp_path / "bench").exists()

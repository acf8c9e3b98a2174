"""`fastdenoise bench` writes its results under --out, by default a per-user cache folder, never the current one."""

import json
import random

import pytest
from typer.testing import CliRunner

from fastdenoise.cli import app
from fastdenoise.evaluation.report import ABOVE_ROOF

runner = CliRunner()


@pytest.mark.parametrize("given", [False, True])
def test_bench_writes_under_out_or_the_cache(given, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from test_benchmark import synthetic_result

    monkeypatch.setenv("FASTDENOISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "fastdenoise.evaluation.benchmark.run_benchmark", lambda cfg, log=print, profile=None: synthetic_result()
    )
    root = tmp_path / "mine" if given else tmp_path / "cache" / "bench"
    result = runner.invoke(app, ["bench", "--profile", "quick", *(["--out", str(root)] if given else [])])
    assert result.exit_code == 0, result.output
    folder = root / "test-box"
    wrote = next(line for line in result.output.splitlines() if line.startswith("wrote "))
    assert wrote.startswith(f"wrote {folder / 'quick.json'}, {folder / 'quick.txt'}, ")
    assert (folder / "quick.json").is_file() and not (tmp_path / "bench").exists()


def test_bench_header_names_the_version_outside_a_git_checkout_and_marks_shares_above_the_roof(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from test_benchmark import synthetic_result

    above = random.Random(28).uniform(1.05, 3.0)  # the eager fp32 row (22.05 GFLOP/s) this far above its roof
    saved = synthetic_result()
    saved["machine"].update(commit=None, dirty=None, versions={"torch": "2.13.0", "fastdenoise": "0.1.0"})
    saved["peak"]["fp32"] = saved["throughput"][1]["gflops"] / above
    path = tmp_path / "saved" / "quick.json"
    path.parent.mkdir()
    path.write_text(json.dumps(saved))
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, ["bench", "--report", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "fastdenoise bench --profile quick on cpu: Test CPU (2 cores, 2 torch threads); "
        "fastdenoise 0.1.0 (not a git checkout); torch 2.13.0; 42 s"
    )
    assert f" {above:.0%}! " in next(line for line in lines if "eager fp32 b4" in line)
    assert ABOVE_ROOF in lines and "commit ?" not in result.output


def test_no_mark_and_no_note_while_every_share_is_under_the_roof(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from test_benchmark import synthetic_result

    path = tmp_path / "quick.json"
    path.write_text(json.dumps(synthetic_result()))
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, ["bench", "--report", str(path)])
    assert result.exit_code == 0, result.output
    assert "commit 0123456789;" in result.output.splitlines()[0]
    assert "%!" not in result.output and ABOVE_ROOF not in result.output

"""`fastdenoise demo`: refuses a noise level it cannot show a gain for."""

from typer.testing import CliRunner

from fastdenoise.cli import app

runner = CliRunner()


def test_demo_refuses_sigma_0_before_any_work(tmp_path):
    result = runner.invoke(app, ["demo", "--sigma", "0", "--out", str(tmp_path / "demo"), "--device", "cpu"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: --sigma: give a noise level above 0 (the demo adds that much noise and removes it)"
    ]
    assert not (tmp_path / "demo").exists()

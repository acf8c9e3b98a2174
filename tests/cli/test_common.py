"""The CLI's shared layer: choices as Enums, one-line usage errors, --version / -h, help text, a light start."""

import itertools
import random
import subprocess
import sys

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from fastdenoise import choices
from fastdenoise.cli import app

runner = CliRunner()


def one_error_line(args: list[str]) -> str:
    """Invoke the CLI, check it failed as a usage error (exit 2, one line, no traceback), return that line."""
    result = runner.invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output and "╭" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize(
    "args,option,enum",
    [
        (["run", "{tmp}", "{tmp}/o", "--backend"], "--backend", choices.BackendKind),
        (["run", "{tmp}", "{tmp}/o", "--precision"], "--precision", choices.Precision),
        (["run", "{tmp}", "{tmp}/o", "--format"], "--format", choices.ImageFormat),
        (["run", "{tmp}", "{tmp}/o", "--loader"], "--loader", choices.LoaderKind),
        (["run", "{tmp}", "{tmp}/o", "--task"], "--task", choices.Task),
        (["run", "{tmp}", "{tmp}/o", "--executor"], "--executor", choices.Executor),
        (["eval", "{tmp}", "--backend"], "--backend", choices.BackendKind),
        (["train", "{tmp}", "--amp"], "--amp", choices.Amp),
        (["train", "{tmp}", "--compile"], "--compile", choices.Switch),
        (["train", "{tmp}", "--loss"], "--loss", choices.Loss),
        (["train", "{tmp}", "--target"], "--target", choices.TaskTarget),
        (["export-onnx", "{tmp}/m.onnx", "--precision"], "--precision", choices.OnnxPrecision),
        (["tables", "split", "{tmp}/labels.csv", "-o", "{tmp}/s.csv", "--split"], "--split", choices.Split),
    ],
)
def test_a_wrong_choice_is_one_line_listing_the_valid_ones(args, option, enum, tmp_path):
    (tmp_path / "labels.csv").write_text("a.png,1\n")
    filled = [a.format(tmp=tmp_path) for a in args] + ["nonsense"]
    valid = ", ".join(e.value for e in enum)
    assert one_error_line(filled) == f"error: {option}: 'nonsense' is not one of {valid}"
    assert runner.invoke(app, [*filled[:-1], list(enum)[-1].value, "--help"]).exit_code == 0


def test_the_backend_error_reads_as_documented(tmp_path):
    line = one_error_line(["run", str(tmp_path), str(tmp_path / "o"), "--backend", "nonsense"])
    valid = "eager, compiled, triton, onnxruntime, tensorrt, openvino, auto"
    assert line == f"error: --backend: 'nonsense' is not one of {valid}"


def test_comma_lists_check_each_element(tmp_path):
    line = one_error_line(["tables", "table1", str(tmp_path), "--peers", "cbm3d,bm4d"])
    assert line == "error: --peers: 'bm4d' is not one of " + ", ".join(choices.PEERS)
    line = one_error_line(["train", str(tmp_path), "-o", str(tmp_path / "r"), "--task", "segment,detect"])
    assert line == (
        "error: --task: task must be one of classify, segment (or several, comma-separated); got 'segment,detect'"
    )


@pytest.mark.parametrize(
    "args,line",
    [
        (["run"], "error: missing argument INPUT"),
        (["run", "in"], "error: missing argument OUTPUT"),
        (["tables", "table3"], "error: missing argument DATA"),
        (["run", "a", "b", "--bogus"], "error: No such option: --bogus"),
        (["run", "a", "b", "--backend"], "error: Option '--backend' requires an argument."),
        (["nonsense"], "error: No such command 'nonsense'."),
        (["tables", "table1", "{tmp}/absent"], "error: DATA: dir '{tmp}/absent' does not exist."),
    ],
)
def test_usage_errors_are_one_line(args, line, tmp_path):
    assert one_error_line([a.format(tmp=tmp_path) for a in args]) == line.format(tmp=tmp_path)


def test_a_bad_number_names_the_option(tmp_path):
    line = one_error_line(["run", str(tmp_path), str(tmp_path / "o"), "--batch", "four"])
    assert line.startswith("error: --batch: ") and "four" not in line.split(":", 2)[1]


@pytest.mark.parametrize(
    "args,option,line",
    [
        (["run", "{tmp}", "{tmp}/o"], "--batch", "must be >= 1"),
        (["run", "{tmp}", "{tmp}/o"], "--workers", "must be >= 1"),
        (["run", "{tmp}", "{tmp}/o"], "--tile", "must be >= 8"),
        (["run", "{tmp}", "{tmp}/o"], "--overlap", "must be >= 4"),
        (["run", "{tmp}", "{tmp}/o"], "--quality", "must be >= 1"),
        (["run", "{tmp}", "{tmp}/o"], "--max-pixels", "must be >= 1"),
        (["train", "{tmp}", "-o", "{tmp}/r"], "--batch", "must be >= 1"),
        (["train", "{tmp}", "-o", "{tmp}/r"], "--steps", "must be >= 1"),
        (["train", "{tmp}", "-o", "{tmp}/r"], "--val-every", "must be >= 1"),
        (["train", "{tmp}", "-o", "{tmp}/r"], "--ckpt-every", "must be >= 1"),
        (["train", "{tmp}", "-o", "{tmp}/r"], "--patch", "must be >= 4"),
        (["eval", "{tmp}"], "--limit", "must be >= 1"),
        (["build-engine"], "--batch", "must be >= 1"),
        (["build-engine"], "--tile", "must be >= 1"),
    ],
)
def test_a_number_out_of_range_names_the_option_and_the_bound(args, option, line, tmp_path):
    below = random.Random(option).randint(-1000, 0)  # 0 (the case met first: `--batch 0`) or a negative number
    for value in ("0", str(below)):
        assert one_error_line([a.format(tmp=tmp_path) for a in args] + [option, value]) == f"error: {option}: {line}"


def test_a_number_above_its_range_and_the_tile_overlap_rule_name_the_options(tmp_path):
    run = ["run", str(tmp_path), str(tmp_path / "o")]
    assert one_error_line([*run, "--quality", "101"]) == "error: --quality: must be <= 100"
    (tmp_path / "a.png").write_bytes(b"")
    assert one_error_line([*run, "--tile", "30"]) == (
        "error: --tile 30 and --overlap 64: both must be multiples of 4, with 0 < overlap < tile"
    )


def test_the_cli_and_the_library_share_one_vocabulary():
    """Each choice is written once (fastdenoise.choices): the library's names are the very Enums the CLI offers."""
    from fastdenoise import backends, images
    from fastdenoise.engines.build import HARDWARE_COMPATIBILITY
    from fastdenoise.engines.export import EXPORTERS
    from fastdenoise.evaluation import tables
    from fastdenoise.pipeline import cluster, loaders
    from fastdenoise.training import joint
    from fastdenoise.training.fit import LOSSES, TrainConfig

    assert backends.BackendKind is choices.BackendKind and backends.Precision is choices.Precision
    assert loaders.LoaderKind is choices.LoaderKind and cluster.Executor is choices.Executor
    assert joint.Task is choices.Task and joint.TaskTarget is choices.TaskTarget and tables.Split is choices.Split
    assert tables.PEERS is choices.PEERS
    assert list(images.FORMATS) == list(choices.values(choices.ImageFormat)) and images.FORMATS["tiff"] == ".tif"
    assert HARDWARE_COMPATIBILITY == choices.values(choices.HardwareCompatibility)
    assert EXPORTERS == choices.values(choices.Exporter) and list(LOSSES) == list(choices.Loss)
    assert set(choices.values(choices.OnnxPrecision)) == set(choices.values(choices.Precision)) - {"int8"}
    for name, choice in (("amp", choices.Amp), ("compile", choices.Switch), ("schedule", choices.Schedule)):
        for value in choices.values(choice):
            TrainConfig("data", "out", **{name: value})
        with pytest.raises(ValueError, match=f"{name} must be one of {', '.join(choices.values(choice))}"):
            TrainConfig("data", "out", **{name: "fp8"})


def test_a_choice_is_its_value_for_the_library():
    assert str(choices.BackendKind.eager) == f"{choices.BackendKind.eager}" == "eager"
    assert choices.Task("segment") is choices.Task.SEGMENT and choices.Task.SEGMENT == "segment"
    assert choices.ImageFormat.jpeg.suffix == ".jpg" and choices.ImageFormat.png.suffix == ".png"


def test_version_and_short_help():
    from fastdenoise import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"fastdenoise {__version__}\n"
    for args in ([], ["run"], ["tables"], ["tables", "table2"]):
        short, long = (runner.invoke(app, [*args, flag]) for flag in ("-h", "--help"))
        assert short.exit_code == long.exit_code == 0 and short.output == long.output and "Usage:" in short.output


def test_help_lists_the_choices():
    out = runner.invoke(app, ["run", "--help"]).output
    assert "<eager|compiled|triton|onnxruntime|tensorrt|openvino|auto>" in out
    assert "<png|jpg|jpeg|webp|bmp|tiff>" in out and "<auto|dali|pil>" in out


def test_help_keeps_brackets_and_reflows_docstrings():
    assert "image i uses [seed, i])" in runner.invoke(app, ["eval", "--help"]).output
    assert "default_rng([seed, i])" in " ".join(runner.invoke(app, ["tables", "table2", "--help"]).output.split())
    for args, first in ((["run"], "Denoise every image"), (["tables", "table3"], "Table 3: mIoU")):
        out = runner.invoke(app, [*args, "--help"]).output
        lines = out.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(first))
        end = lines.index("", start)
        paragraph = [ln.strip() for ln in lines[start:end]]
        # Filled like a wrapped paragraph: no line could have taken the next line's first word.
        width = max(len(ln) for ln in paragraph)
        for line, following in itertools.pairwise(paragraph):
            assert len(line) + 1 + len(following.split()[0]) > width, (line, following)


def test_help_starts_without_torch():
    """`fastdenoise --help` loads typer and the CLI, not torch or the library (speed: bench/cli_startup.py)."""
    code = """
import sys
sys.argv = ["fastdenoise", "--help"]
from fastdenoise.cli import main
try:
    main()
except SystemExit:
    pass
library = ("fastdenoise.training.fit", "fastdenoise.pipeline.runner", "fastdenoise.evaluation.tables")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy", "rich") or m in library)
print("heavy", heavy)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert "Commands:" in done.stdout and done.stdout.strip().endswith("heavy []"), done.stdout[-500:] + done.stderr


def test_python_dash_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "fastdenoise", "run", "a", "b", "--backend", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: --backend: 'x' is not one of eager, compiled, triton, onnxruntime, tensorrt, openvino, auto"
    ]


def commands(group, path=()):
    """(name, click command) of every command and subcommand."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


# Options of another command that a help text names on purpose (the training run that made an arm's weights).
OTHER_COMMANDS_OPTIONS = {("tables table2", "--task"), ("tables table3", "--task"), ("tables split", "--labels")}


def test_help_names_only_options_the_command_has():
    """`export-onnx -w` once said "default: the bundled model for --sigma": export-onnx has no --sigma."""
    import re

    from typer.main import get_command

    for name, command in commands(get_command(app)):
        own = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for text in [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]:
            named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", re.sub(r"`[^`]*`", "", text)))  # `run --tile` aside
            assert not {(name, o) for o in named - own} - OTHER_COMMANDS_OPTIONS, (name, text)
    for name in ("export-onnx", "build-engine", "bench"):
        help_text = " ".join(runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output.split())
        assert "--weights <path> Weights (.safetensors or checkpoint); default: the bundled blind model." in help_text

"""The package's shape: imports point down (cli -> library -> kernels/engines), functions and modules stay small, and
no line of fastdenoise/, kernels/, engines/ or bench/ is over 120 characters. `python tests/test_layout.py` prints the
largest functions and modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastdenoise"
MAX_FUNCTION_LINES = 80  # lines as `ruff format` writes them (60 when wrapped by hand: the formatter spreads calls)
MAX_LINE_CHARS = 120  # pyproject's [tool.ruff] line-length
MAX_MODULE_LINES = 500  # likewise (400 by hand)
# Exceptions to the limits, each held at its size so it can only shrink. report.py: 399 lines before its long lines
# were wrapped to the 120-character limit.
OVERSIZED_FUNCTIONS: dict[str, int] = {}
OVERSIZED_MODULES: dict[str, int] = {}
# The rooms, bottom up, and the rooms each may import (its own included). A top-level module of fastdenoise/ is in
# the foundation: small leaf modules (choices, files, images, noise, words ...) that every room may use; `api` (the
# Python API: load, denoise_folder) is a room of one module, above the folder run, beside the CLI.
ROOM_IMPORTS = {
    "foundation": {"foundation"},
    "models": {"foundation", "models"},
    "kernels": {"foundation", "models", "kernels"},
    "engines": {"foundation", "models", "engines"},
    "backends": {"foundation", "models", "kernels", "engines", "backends"},
    "training": {"foundation", "models", "kernels", "engines", "backends", "training"},
    "pipeline": {"foundation", "models", "kernels", "engines", "backends", "pipeline"},
    "evaluation": {"foundation", "models", "kernels", "engines", "backends", "training", "pipeline", "evaluation"},
    "api": {"foundation", "models", "kernels", "engines", "backends", "pipeline", "api"},
}
ROOMS = {*ROOM_IMPORTS, "cli"}


def sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module a file imports, at the top or inside functions; relative imports resolved against `package`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def package_imports(path: Path, package: str) -> set[str]:
    """The fastdenoise modules a file imports, as names below the package (`runner`, `tables`, `kernels.backend`)."""
    found = set()
    for name in imported_modules(path, package):
        if name.startswith("fastdenoise."):
            found.add(name.removeprefix("fastdenoise.").split(".")[0])
    return found


def function_sizes(path: Path) -> dict[str, int]:
    """Lines of each function (methods and nested functions too), keyed `file:name` (the largest of a name). In the
    CLI (fastdenoise/cli/) only the body counts, docstring included: a command's signature is its typer option
    declarations, one parameter per option, and is as long as the command has options."""
    rel = path.relative_to(ROOT).as_posix()
    body_only = rel.startswith("fastdenoise/cli/")
    sizes: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            key = f"{rel}:{node.name}"
            start = node.body[0].lineno if body_only else node.lineno
            sizes[key] = max(sizes.get(key, 0), node.end_lineno - start + 1)
    return sizes


def long_lines(paths: list[Path], root: Path = ROOT, limit: int = MAX_LINE_CHARS) -> list[str]:
    """`file:line (N chars)` for every line longer than `limit` characters, the file relative to `root`."""
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if len(line) > limit:
                found.append(f"{path.relative_to(root).as_posix()}:{number} ({len(line)} chars)")
    return found


def module_sizes() -> dict[str, int]:
    return {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in sources(PACKAGE)}


def test_imports_parse_relative_and_lazy_forms(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from .export import x\ndef f():\n    from fastdenoise.training.fit import fit\nimport fastdenoise.cli\n"
    )
    assert package_imports(probe, "fastdenoise.engines.build") == {"engines", "training", "cli"}


def room(name: str) -> str:
    """The room of a module named below the package: `pipeline.runner` -> pipeline, `words` -> foundation."""
    first = name.split(".")[0]
    return first if first in ROOMS else "foundation"


def room_sources() -> list[tuple[Path, str]]:
    """(file, its module name below fastdenoise) for every source of the package, kernels/ and engines/ included."""
    found = [(p, module_name(p)) for p in sources(PACKAGE)]
    found += [(p, f"{folder}.{p.stem}") for folder in ("kernels", "engines") for p in sources(ROOT / folder)]
    return [(p, name) for p, name in found if name not in ("", "__main__")]


def test_every_room_imports_only_the_rooms_below_it():
    wrong = []
    for path, name in room_sources():
        if room(name) == "cli":
            continue
        above = {room(imported) for imported in package_imports(path, f"fastdenoise.{name}")} - ROOM_IMPORTS[room(name)]
        wrong += [f"{path.relative_to(ROOT)} ({room(name)}) imports {sorted(above)}"] if above else []
    assert not wrong, wrong


def test_every_module_is_in_a_room_or_the_foundation():
    top = sorted(name for _, name in room_sources() if "." not in name and name not in ROOMS)
    assert len(top) <= 16, f"the foundation grows: {top}"  # a new module goes into the room it serves


def module_name(path: Path) -> str:
    """`fastdenoise/cli/run.py` -> `cli.run`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_only_the_trainers_and_the_cli_import_fit():
    users = {
        module_name(p)
        for p in sources(PACKAGE)
        if "training" in package_imports(p, f"fastdenoise.{module_name(p)}")
        and "fastdenoise.training.fit" in imported_modules(p, f"fastdenoise.{module_name(p)}")
    }
    users = {name for name in users if not name.startswith(("cli", "training"))}
    assert users <= {"evaluation.throughput"}, sorted(users)  # throughput times `fit`'s step


def test_the_package_finds_nothing_through_its_own_file_path():
    # data it needs is package data (importlib.resources), found the same way in a checkout and when installed
    users = [p.relative_to(ROOT).as_posix() for p in sources(PACKAGE) if "__file__" in p.read_text()]
    assert not users, users


def test_no_function_or_module_grows_past_its_limit():
    functions = {k: v for p in sources(PACKAGE) for k, v in function_sizes(p).items()}
    too_long = {k: v for k, v in functions.items() if v > OVERSIZED_FUNCTIONS.get(k, MAX_FUNCTION_LINES)}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (or over their recorded size): {too_long}"
    modules = module_sizes()
    too_big = {k: v for k, v in modules.items() if v > OVERSIZED_MODULES.get(k, MAX_MODULE_LINES)}
    assert not too_big, f"modules over {MAX_MODULE_LINES} lines (or over their recorded size): {too_big}"


def test_long_lines_names_file_and_line(tmp_path):
    probe = tmp_path / "sub" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("x = 1\n" + "y = '" + "é" * 114 + "'\n" + "z = '" + "a" * 115 + "'\n", encoding="utf-8")
    assert long_lines([probe], tmp_path) == ["sub/probe.py:3 (121 chars)"]  # characters, not bytes: line 2 is 120


@pytest.mark.parametrize("folder", ["fastdenoise", "kernels", "engines", "bench"])
def test_no_line_is_over_the_line_length_limit(folder):
    too_long = long_lines(sources(ROOT / folder))
    assert not too_long, f"lines over {MAX_LINE_CHARS} characters: {', '.join(too_long)}"


def test_every_package_folder_is_in_the_wheel():
    """pyproject lists the packages by hand (kernels/ and engines/ install under fastdenoise.): a folder missing from
    the list is missing from every non-editable install (fastdenoise.evaluation.tables once was)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    folders |= {f"fastdenoise.{name}" for name in ("kernels", "engines")}
    assert folders == listed


def test_the_tree_is_as_the_formatter_writes_it():
    """`ruff format` (pinned in the test extra; pyproject configures it) would change no file: run it to fix this."""
    pytest.importorskip("ruff", reason="the formatter comes with the test extra: pip install -e '.[test]'")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(ROOT)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"run `ruff format .` in the repository: {done.stdout.strip() or done.stderr.strip()}"


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    functions = {k: v for p in sources(PACKAGE) for k, v in function_sizes(p).items()}
    for key, lines in sorted(functions.items(), key=lambda kv: -kv[1])[:count]:
        print(f"{lines:5d}  {key}")
    print()
    for key, lines in sorted(module_sizes().items(), key=lambda kv: -kv[1])[:count]:
        print(f"{lines:5d}  {key}")

"""mypy over engines/ against the TensorRT 10 stubs: a call TensorRT 10 does not have fails here, without TensorRT.

tensorrt-stubs installs `tensorrt/` and `tensorrt_bindings/` stubs without a py.typed marker, and 10.13.0.35.1 has a
few signatures Python cannot parse (parameters named `in`, a required parameter after defaulted ones), so mypy would
skip or reject them. The test copies them, rewrites only the unparsable `def` lines to take (*args, **kwargs) (plugin
APIs engines/ does not use) and points MYPYPATH at the copy; everything engines/ calls keeps its real signature.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Calls that do not exist in TensorRT 10: typos, and TensorRT 8 APIs removed in 10. Each must be reported.
PROBE = """
import tensorrt as trt

def probe(engine: trt.ICudaEngine, context: trt.IExecutionContext, config: trt.IBuilderConfig) -> None:
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)  # exists: no error expected
    config.set_memory_pool_limt(trt.MemoryPoolType.WORKSPACE, 1 << 30)  # typo
    config.max_workspace_size = 1 << 30  # removed in TensorRT 10
    context.set_binding_shape(0, (1, 3, 64, 64))  # removed in TensorRT 10
    context.execute_async_v2([], 0)  # removed in TensorRT 10
    engine.get_binding_index("image")  # removed in TensorRT 10
    level = trt.HardwareCompatibilityLevel.AMPERE_PLUSS  # typo
"""
EXPECTED = [
    "set_memory_pool_limt",
    "max_workspace_size",
    "set_binding_shape",
    "execute_async_v2",
    "get_binding_index",
    "AMPERE_PLUSS",
]


def parseable_stubs(dst: Path) -> Path:
    """Copy of the tensorrt-stubs packages in dst with unparsable `def` lines made generic; returns dst."""
    dist = metadata.distribution("tensorrt-stubs")
    for file in dist.files or []:
        if file.suffix != ".pyi" or file.parts[0] not in ("tensorrt", "tensorrt_bindings"):
            continue
        text = Path(dist.locate_file(file)).read_text()
        for _ in range(100):
            try:
                ast.parse(text)
                break
            except SyntaxError as err:
                lines = text.splitlines()
                line = lines[(err.lineno or 1) - 1]
                match = re.match(r"(\s*def \w+)\(.*\)( -> .*:)\s*$", line)
                if match is None:
                    pytest.fail(f"tensorrt-stubs {dist.version}: cannot make {file}:{err.lineno} parseable: {line!r}")
                lines[(err.lineno or 1) - 1] = f"{match[1]}(self, *args, **kwargs){match[2]}"
                text = "\n".join(lines) + "\n"
        out = dst / file
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.is_file() or out.read_text() != text:  # unchanged files keep mypy's cache warm
            out.write_text(text)
    return dst


@pytest.fixture(scope="module")
def mypy_report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install mypy)")
    try:
        version = metadata.version("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    base = Path(cache.mkdir("mypy")) if cache is not None else tmp_path_factory.mktemp("mypy")
    stubs = parseable_stubs(base / f"tensorrt-stubs-{version}")
    probe = base / "probe" / "trt_probe.py"  # a fixed path: mypy replays cached errors under the path it first saw
    probe.parent.mkdir(exist_ok=True)
    if not probe.is_file() or probe.read_text() != PROBE:
        probe.write_text(PROBE)
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(base / "cache"),
    ]
    env = {**os.environ, "MYPYPATH": str(stubs)}
    result = subprocess.run(
        [*command, "engines", str(probe)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if "error:" not in result.stdout and result.returncode != 0:
        pytest.fail(f"mypy did not run: {result.stdout}{result.stderr}")
    return result.stdout, probe


def test_engines_use_only_tensorrt_10_api(mypy_report: tuple[str, Path]) -> None:
    output, _ = mypy_report
    ours = [line for line in output.splitlines() if line.startswith("engines") and "error:" in line]
    assert ours == [], "\n".join(ours)
    assert re.search(r"checked 5 source files", output), output


def test_the_stubs_catch_calls_tensorrt_10_does_not_have(mypy_report: tuple[str, Path]) -> None:
    output, probe = mypy_report
    errors = [line for line in output.splitlines() if f"{probe.name}:" in line and "error:" in line]
    for name in EXPECTED:
        assert any(name in line for line in errors), f"mypy did not flag {name}:\n{output}"
    valid = next(i for i, line in enumerate(PROBE.splitlines(), 1) if "no error expected" in line)
    assert not any(f"{probe.name}:{valid}:" in line for line in errors), "a valid call was flagged"
    assert len(errors) == len(EXPECTED), output

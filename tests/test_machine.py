"""What a benchmark result records about its machine: the CPU's ISA flags and the cores this process may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastdenoise import machine


def test_cpu_flags_keep_the_flags_that_pick_an_arm(monkeypatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some EPYC\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 "
        "amx_tile amx_int8 ht\n"
    )
    real = Path

    monkeypatch.setattr(machine, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real(p))
    assert machine.cpu_flags() == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_int8"]
    assert machine.cpu_model() == "Some EPYC"
    monkeypatch.setattr(machine, "Path", lambda p: tmp_path / "absent")
    assert machine.cpu_flags() == []


def test_machine_facts_record_isa_and_usable_cores() -> None:
    import os

    facts = machine.machine_facts()
    assert set(facts["isa"]) <= set(machine.ISA_FLAGS)
    assert facts["cores_usable"] == len(os.sched_getaffinity(0)) <= facts["cores"]
    if Path("/proc/cpuinfo").is_file() and " avx2 " in Path("/proc/cpuinfo").read_text():
        assert "avx2" in facts["isa"]
    else:
        pytest.skip("no AVX2 flag to look for here")

"""Benchmark logic on tiny synthetic inputs: tables, roofline, compare, plots, baselines, data checks, a tiny run."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL, synthetic_data

from fastdenoise.evaluation.accuracy import (
    DEFAULT_BASELINES,
    AccuracyCheck,
    DataIntegrityError,
    Scorer,
    judge,
    load_baselines,
    record_baselines,
    run_accuracy,
    verify_files,
)
from fastdenoise.evaluation.benchmark import PROFILES, BenchConfig, BenchProfile, run_benchmark
from fastdenoise.evaluation.report import (
    accuracy_failed,
    compare_results,
    load_result,
    plot_result,
    render_text,
    roofline_line,
    write_outputs,
)
from fastdenoise.evaluation.throughput import (
    ThroughputCase,
    TrainMode,
    backend_unavailable,
    matmul_math,
    measure_peak,
    measure_throughput,
    measure_training,
    tf32_convolutions,
)
from fastdenoise.models.checkpoint import save_weights
from fastdenoise.models.denoiser import Denoiser

QUIET = lambda message: None


def speed_row(name: str, backend: str, precision: str, mp_per_s: float, batch: int = 4, size: int = 64) -> dict:
    return {
        "name": name,
        "backend": backend,
        "precision": precision,
        "batch": batch,
        "height": size,
        "width": size,
        "mp_per_s": mp_per_s,
        "images_per_s": mp_per_s / (size * size / 1e6),
        "gflops": mp_per_s * 441.0,
    }


def synthetic_result(speed: float = 1.0, psnr_shift: float = 0.0, machine: str = "test-box") -> dict:
    """A complete result as run_benchmark writes it, with round numbers; `speed` scales every rate."""
    return {
        "schema": 1,
        "profile": "quick",
        "created": "2026-11-24T12:00:00+00:00",
        "device": "cpu",
        "seconds": 42.0,
        "machine": {
            "cpu": "Test CPU",
            "cores": 2,
            "torch_threads": 2,
            "versions": {"torch": "2.13.0"},
            "gpu": None,
            "commit": "0123456789abcdef",
            "dirty": False,
        },
        "machine_name": machine,
        "weights": {"path": "bundled", "sha256": "ab" * 32},
        "gflop_per_mp": 441.0,
        "peak": {"fp32": 100.0, "bf16": 400.0},
        "throughput": [
            speed_row("naive fp32 b1 64x64", "naive", "fp32", 0.01 * speed, batch=1),
            speed_row("eager fp32 b4 64x64", "eager", "fp32", 0.05 * speed),
            speed_row("eager bf16 b4 64x64", "eager", "bf16", 0.2 * speed),
        ],
        "training": [
            {
                "name": "train eager fp32 b8 64x64",
                "samples_per_s": 3.0 * speed,
                "mp_per_s": 0.0123 * speed,
                "gflops": 16.3 * speed,
            }
        ],
        "skipped": [
            {"name": "triton fp32 b4 64x64", "reason": "interpreter only"},
            {"name": "train compiled amp bf16 b8 64x64", "reason": "no compiler"},
        ],
        "quality": [
            {
                "method": "fastdenoise eager fp32",
                "key": "bundled",
                "images": 4,
                "data": "kodak24",
                "sigma": 25.0,
                "seed": 0,
                "psnr": 32.0 + psnr_shift,
                "mp_per_s": 0.04 * speed,
                "gflop_per_mp": 441.0,
            },
            {
                "method": "naive loop fp32",
                "key": "naive",
                "images": 4,
                "data": "kodak24",
                "sigma": 25.0,
                "seed": 0,
                "psnr": 32.0 + psnr_shift,
                "mp_per_s": 0.02 * speed,
                "gflop_per_mp": 441.0,
            },
            {
                "method": "CDnCNN-B",
                "key": "cdncnn-b",
                "images": 4,
                "data": "kodak24",
                "sigma": 25.0,
                "seed": 0,
                "psnr": 31.5,
                "mp_per_s": 0.015 * speed,
                "gflop_per_mp": 1334.0,
            },
            {
                "method": "CBM3D",
                "key": "cbm3d",
                "images": 1,
                "data": "kodak24",
                "sigma": 25.0,
                "seed": 0,
                "psnr": 30.1,
                "mp_per_s": 0.01 * speed,
                "gflop_per_mp": None,
            },
        ],
        "accuracy": [
            {
                "key": "kodak24-first4-sigma25",
                "method": "bundled",
                "psnr": 32.0 + psnr_shift,
                "baseline": None,
                "tolerance_db": 0.05,
                "status": "no-baseline",
                "message": "no baseline recorded",
            }
        ],
    }


# ------------------------------------------------------------------------------------------------- tables and compare


def test_table_shows_every_section_ratios_and_roofline() -> None:
    text = render_text(synthetic_result(), width=200)
    for expected in (
        "eager bf16 b4 64x64",
        "train eager fp32 b8 64x64",
        "CDnCNN-B",
        "kodak24-first4-sigma25",
        "not recorded",
        "skipped triton fp32 b4 64x64: interpreter only",
        "skipped train compiled amp bf16 b8 64x64: no compiler",
    ):
        assert expected in text
    eager_bf16 = next(line for line in text.splitlines() if "eager bf16 b4 64x64" in line)
    assert "20.00" in eager_bf16  # x naive: 0.2 / 0.01
    assert "22%" in eager_bf16  # 0.2 MP/s x 441 GFLOP/MP = 88.2 GFLOP/s of the 400 GFLOP/s bf16 peak
    line = roofline_line(synthetic_result())
    assert "best eager bf16 b4 64x64" in line and "88.2 GFLOP/s" in line and "22% of the bf16 peak" in line


def test_roofline_says_when_it_was_not_measured() -> None:
    result = synthetic_result()
    result["peak"] = {}
    assert "not measured" in roofline_line(result)


def test_compare_fails_only_past_the_threshold() -> None:
    saved = synthetic_result()
    changes = compare_results(synthetic_result(speed=0.85), saved, threshold=0.10)
    speeds = [c for c in changes if c.metric != "psnr"]
    assert speeds and all(c.failed and c.ratio == pytest.approx(0.85) for c in speeds)
    assert not any(c.failed for c in compare_results(synthetic_result(speed=0.85), saved, threshold=0.20))
    assert not any(c.failed for c in compare_results(synthetic_result(speed=1.5), saved, threshold=0.0))


def test_compare_fails_on_a_psnr_drop_and_matches_rows_by_name() -> None:
    saved = synthetic_result()
    current = synthetic_result(psnr_shift=-0.1)
    current["throughput"].pop()  # a case only the saved result has: not compared
    failed = [c for c in compare_results(current, saved, threshold=0.1, psnr_tolerance=0.05) if c.failed]
    assert {(c.name, c.metric) for c in failed} == {("fastdenoise eager fp32", "psnr"), ("naive loop fp32", "psnr")}
    assert all(c.current - c.saved == pytest.approx(-0.1) for c in failed)
    assert "eager bf16 b4 64x64" not in {c.name for c in compare_results(current, saved)}
    with pytest.raises(ValueError, match="threshold"):
        compare_results(current, saved, threshold=1.5)


def test_accuracy_failed_lists_failures_and_errors() -> None:
    result = synthetic_result()
    assert accuracy_failed(result) == []
    result["accuracy"] += [
        {**result["accuracy"][0], "status": "fail", "message": "dropped"},
        {**result["accuracy"][0], "status": "error", "message": "checksum differs"},
    ]
    assert accuracy_failed(result) == ["dropped", "checksum differs"]


# ------------------------------------------------------------------------------------------------------ files, plots


def test_outputs_round_trip_and_plots_are_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    result = synthetic_result(machine="box-a")
    written = write_outputs(result, tmp_path)
    folder = tmp_path / "box-a"
    assert sorted(p.name for p in written) == ["quick-quality.png", "quick-throughput.png", "quick.json", "quick.txt"]
    assert load_result(folder / "quick.json") == result
    assert "eager bf16 b4 64x64" in (folder / "quick.txt").read_text()
    for name in ("quick-quality.png", "quick-throughput.png"):
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width >= 800 and image.height >= 300


def test_plots_follow_the_sections_present(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = synthetic_result()
    result["quality"] = []
    assert [p.name for p in plot_result(result, tmp_path)] == ["quick-throughput.png"]


def test_load_result_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    for name in ("bad.json", "other.json", "absent.json"):
        with pytest.raises(ValueError, match="not a benchmark result"):
            load_result(tmp_path / name)


# ------------------------------------------------------------------------------------------------ profiles, backends


def test_profiles_are_valid_and_their_checks_exist() -> None:
    checks = load_baselines(DEFAULT_BASELINES)
    for profile in PROFILES.values():
        assert profile.throughput_cases()
        assert all(key in checks for key in profile.accuracy), profile.name
    quick = PROFILES["quick"]
    assert len(quick.throughput_cases()) == len(quick.backends) * len(quick.precisions) * len(quick.batches) * len(
        quick.sizes
    )
    with pytest.raises(ValueError, match="precision"):
        BenchProfile("bad", precisions=("fp64",))
    with pytest.raises(ValueError):
        ThroughputCase("cuda-graphs", "fp32", 1, 64, 64)
    with pytest.raises(ValueError, match="amp"):
        TrainMode(amp="int8")
    with pytest.raises(ValueError, match="unknown profile"):
        BenchConfig(profile="huge")
    with pytest.raises(ValueError, match="sections"):
        BenchConfig(sections=("speed",))


def test_unavailable_backends_have_reasons() -> None:
    cpu = torch.device("cpu")
    assert "interpreter" in backend_unavailable("triton", "fp32", cpu)
    assert "bfloat16" in backend_unavailable("onnxruntime", "bf16", cpu)
    assert "GPU" in backend_unavailable("tensorrt", "fp32", cpu)
    assert "CPU" in backend_unavailable("openvino", "fp32", torch.device("cuda"))
    assert backend_unavailable("eager", "fp16", cpu) is not None
    assert backend_unavailable("eager", "fp32", cpu) is None


def test_measure_throughput_times_available_cases_and_skips_the_rest() -> None:
    model = Denoiser(SMALL).eval()
    cases = [ThroughputCase("eager", "fp32", 2, 16, 20), ThroughputCase("triton", "fp32", 2, 16, 20)]
    rows, skipped = measure_throughput(model, cases, torch.device("cpu"), rounds=2, log=QUIET)
    assert [r["name"] for r in rows] == ["eager fp32 b2 16x20"]
    row = rows[0]
    assert row["rounds"] == 2 == len(row["seconds"])  # every round, not only the median
    assert min(row["seconds"]) == row["seconds_min"] <= row["seconds_median"]
    assert row["mp_per_s"] == pytest.approx(2 * 16 * 20 / 1e6 / row["seconds_median"])
    assert row["images_per_s"] == pytest.approx(2 / row["seconds_median"])
    assert [s["name"] for s in skipped] == ["triton fp32 b2 16x20"] and "interpreter" in skipped[0]["reason"]


def test_measure_training_and_peak_report_rates() -> None:
    rows, skipped = measure_training(
        (TrainMode(),), batch=2, patch=16, device=torch.device("cpu"), rounds=1, log=QUIET, spec=SMALL
    )
    assert not skipped and rows[0]["samples_per_s"] > 0 and rows[0]["batch"] == 2
    peak = measure_peak(torch.device("cpu"), ("fp32", "fp16"), n=64, rounds=1)
    assert set(peak) == {"fp32"} and peak["fp32"] > 0  # no fp16 matmul peak on a CPU


# ----------------------------------------------------------------------------------------- data, baselines, accuracy


def test_verify_files_names_changed_and_unlisted_files(tmp_path: Path, rng: np.random.Generator) -> None:
    root = synthetic_data(tmp_path, rng)
    paths = sorted((root / "kodak24").iterdir())
    verify_files(root, paths)
    paths[1].write_bytes(paths[1].read_bytes() + b"\0")
    extra = root / "kodak24" / "extra.png"
    extra.write_bytes(paths[0].read_bytes())
    with pytest.raises(
        DataIntegrityError, match=r"kodak24/kodim02.png \(checksum differs\), kodak24/extra.png \(not listed\)"
    ):
        verify_files(root, [*paths, extra])


def test_judge_passes_within_tolerance_and_fails_below_it() -> None:
    check = AccuracyCheck("k", limit=4, psnr=32.0, tolerance_db=0.05, weights_sha256="aa" * 32)
    assert judge(check, 31.96).status == "pass"
    assert judge(check, 33.0).status == "pass"
    failed = judge(check, 31.9, weights_sha256="bb" * 32)
    assert failed.status == "fail" and "-0.100 dB" in failed.message and "aaaaaaaaaaaa" in failed.message
    assert judge(replace(check, psnr=None), 20.0).status == "no-baseline"
    with pytest.raises(ValueError):
        AccuracyCheck("k", method="dncnn-xl")


def test_accuracy_check_fails_when_the_model_regresses(tmp_path: Path, rng: np.random.Generator) -> None:
    root = synthetic_data(tmp_path, rng)
    torch.manual_seed(0)
    model = Denoiser(SMALL).eval()
    scorer = Scorer(root, model, torch.device("cpu"), log=QUIET)
    check = AccuracyCheck("tiny", limit=2, sigma=25.0)
    (measured,) = run_accuracy(scorer, [check], None)
    assert measured.status == "no-baseline" and measured.psnr is not None
    (held,) = run_accuracy(scorer, [replace(check, psnr=measured.psnr)], None)
    assert held.status == "pass"
    with torch.no_grad():  # a regression: damage the head, score again with a fresh scorer
        model.head[0].weight.mul_(3.0)
    (regressed,) = run_accuracy(
        Scorer(root, model, torch.device("cpu"), log=QUIET), [replace(check, psnr=measured.psnr)], None
    )
    assert regressed.status == "fail" and regressed.psnr < measured.psnr - check.tolerance_db


def test_accuracy_check_errors_on_changed_data(tmp_path: Path, rng: np.random.Generator) -> None:
    root = synthetic_data(tmp_path, rng)
    first = root / "kodak24" / "kodim01.png"
    first.write_bytes(first.read_bytes() + b"\0")
    (outcome,) = run_accuracy(
        Scorer(root, Denoiser(SMALL).eval(), torch.device("cpu"), log=QUIET),
        [AccuracyCheck("t", limit=2, psnr=30.0)],
        None,
    )
    assert outcome.status == "error" and "checksum differs" in outcome.message


def test_committed_baselines_are_well_formed() -> None:
    checks = load_baselines(DEFAULT_BASELINES)
    assert "kodak24-first4-sigma25" in checks and checks["kodak24-first4-sigma25"].limit == 4
    for check in checks.values():
        assert check.tolerance_db > 0 and check.data == "kodak24"
        assert check.psnr is None or 20 < check.psnr < 40, check.key


def test_record_baselines_writes_values_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "baselines.json"
    path.write_text(DEFAULT_BASELINES.read_text())
    facts = {"commit": "c0ffee", "versions": {"torch": "2.13.0"}, "cpu": "Test CPU", "cores": 2, "gpu": None}
    record_baselines(path, {"kodak24-first4-sigma25": 31.23456}, {"kodak24-first4-sigma25": "ab" * 32}, facts)
    after, before = load_baselines(path), load_baselines(DEFAULT_BASELINES)
    recorded = after["kodak24-first4-sigma25"]
    assert recorded.psnr == 31.235 and recorded.weights_sha256 == "ab" * 32 and recorded.recorded["commit"] == "c0ffee"
    assert {k: v for k, v in after.items() if k != "kodak24-first4-sigma25"} == {
        k: v for k, v in before.items() if k != "kodak24-first4-sigma25"
    }
    assert json.loads(path.read_text())["about"] == json.loads(DEFAULT_BASELINES.read_text())["about"]


# ---------------------------------------------------------------------------------------------------------- tiny run


def test_tiny_run_end_to_end(tmp_path: Path, rng: np.random.Generator) -> None:
    """run_benchmark on synthetic data with small weights: every section, a failing accuracy check, outputs written."""
    pytest.importorskip("matplotlib")
    root = synthetic_data(tmp_path / "data", rng)
    weights = tmp_path / "small.safetensors"
    torch.manual_seed(0)
    save_weights(Denoiser(SMALL), weights)
    baselines = tmp_path / "baselines.json"
    baselines.write_text(json.dumps({"checks": {"tiny": {"limit": 2, "psnr": 99.0}}}))
    profile = replace(
        PROFILES["quick"],
        name="tiny",
        backends=("eager", "triton"),
        precisions=("fp32",),
        batches=(1, 2),
        sizes=((16, 16),),
        rounds=1,
        train_modes=(TrainMode(),),
        train_batch=1,
        train_patch=16,
        train_rounds=1,
        quality_images=2,
        ours=("fp32",),
        peers=(),
        accuracy=("tiny",),
        matmul_size=64,
    )
    cfg = BenchConfig(data=str(root), weights=str(weights), baselines=str(baselines))
    result = run_benchmark(cfg, log=QUIET, profile=profile)

    assert [r["name"] for r in result["throughput"]] == [
        "naive fp32 b1 16x16",
        "eager fp32 b1 16x16",
        "eager fp32 b2 16x16",
    ]
    assert {s["name"] for s in result["skipped"]} == {"triton fp32 b1 16x16", "triton fp32 b2 16x16"}
    assert [r["key"] for r in result["quality"]] == ["bundled", "naive"] and result["quality"][0]["images"] == 2
    assert result["quality"][0]["psnr"] == pytest.approx(result["quality"][1]["psnr"], abs=0.01)  # folded == unfolded
    assert result["accuracy"][0]["status"] == "fail" and accuracy_failed(result)
    assert result["gflop_per_mp"] < 50  # the small spec, not the default 441
    assert result["machine"]["cores"] and result["profile"] == "tiny"
    written = write_outputs(copy.deepcopy(result), tmp_path / "results")
    assert len(written) == 4 and all(p.stat().st_size > 0 for p in written)
    assert not any(c.failed for c in compare_results(result, load_result(written[0])))


def test_cli_bench_reports_and_compares(tmp_path: Path) -> None:
    """`fastdenoise bench --report A --compare B`: the report, the plots and the regression verdict."""
    from typer.testing import CliRunner

    from fastdenoise.cli import app

    pytest.importorskip("matplotlib")
    saved, slower = tmp_path / "saved.json", tmp_path / "now" / "quick.json"
    slower.parent.mkdir()
    saved.write_text(json.dumps(synthetic_result()))
    slower.write_text(json.dumps(synthetic_result(speed=0.5)))
    runner = CliRunner()
    same = runner.invoke(app, ["bench", "--report", str(saved), "--compare", str(saved)])
    assert same.exit_code == 0, same.output
    assert "0 of" in same.output and (tmp_path / "quick-throughput.png").is_file()
    worse = runner.invoke(app, ["bench", "--report", str(slower), "--compare", str(saved), "--threshold", "0.2"])
    assert worse.exit_code == 1 and "past the threshold" in worse.output
    missing = runner.invoke(app, ["bench", "--profile", "huge", "--accuracy-only"])
    assert missing.exit_code == 2 and "unknown profile" in missing.output


def test_baselines_ship_with_the_package() -> None:
    from importlib import resources

    from fastdenoise.evaluation.accuracy import DEFAULT_BASELINES, load_baselines
    from fastdenoise.evaluation.benchmark import PROFILES

    assert DEFAULT_BASELINES == Path(str(resources.files("fastdenoise").joinpath("baselines.json")))
    checks = load_baselines()
    assert all(key in checks for profile in PROFILES.values() for key in profile.accuracy)


def test_the_fp32_roof_runs_in_tf32_only_where_fp32_convolutions_do() -> None:
    assert not tf32_convolutions(torch.device("cpu"))  # CPUs: full fp32 both ways
    before = torch.get_float32_matmul_precision()
    with matmul_math(tf32=True):
        assert torch.get_float32_matmul_precision() == "high"  # TF32 matmuls where the GPU has them
    with matmul_math(tf32=False):
        assert torch.get_float32_matmul_precision() == before
    assert torch.get_float32_matmul_precision() == before


def test_a_run_without_the_shared_data_measures_quality_on_the_sample_photos(tmp_path: Path, monkeypatch) -> None:
    """An installed package has no data folder: quality runs on the demo's photos (no peers), accuracy is skipped and
    the result says which data it used; `--accuracy-only` refuses in one line."""
    monkeypatch.delenv("FASTDENOISE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing here or above holds shared/data
    weights = tmp_path / "small.safetensors"
    torch.manual_seed(0)
    save_weights(Denoiser(SMALL), weights)
    profile = replace(PROFILES["quick"], name="tiny", quality_images=1, ours=("fp32",), matmul_size=64)
    cfg = BenchConfig(weights=str(weights), sections=("quality", "accuracy"))
    lines: list[str] = []
    result = run_benchmark(cfg, log=lines.append, profile=profile)
    assert result["data"].startswith("samples") and "no shared data folder" in lines[0]
    assert [(r["key"], r["data"], r["images"]) for r in result["quality"]] == [
        ("bundled", "samples", 1),
        ("naive", "samples", 1),
    ]
    assert 0 < result["quality"][0]["psnr"] < 60 and result["accuracy"] == []
    assert {s["name"] for s in result["skipped"]} == {"accuracy checks"}
    with pytest.raises(FileNotFoundError, match="FASTDENOISE_DATA"):
        run_benchmark(replace(cfg, sections=("accuracy",)), log=QUIET, profile=profile)

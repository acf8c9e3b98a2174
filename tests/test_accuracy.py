"""Accuracy checks of named bundled models (per-sigma weights): scored with their own file, judged and recorded with
its digest; a model not bundled is an error, or a skip while its entry has no baseline. Small random weights, tiny
random images."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL, randomize_bn, synthetic_data

from fastdenoise.evaluation.accuracy import AccuracyCheck, Scorer, load_baselines, record_baselines, run_accuracy
from fastdenoise.files import sha256_file
from fastdenoise.models.checkpoint import load_denoiser, save_weights
from fastdenoise.models.denoiser import Denoiser

ROOT = Path(__file__).resolve().parents[1]
QUIET = lambda message: None
CPU = torch.device("cpu")


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A weights folder holding two random small models, alpha and beta."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for seed, name in enumerate(("alpha", "beta")):
        torch.manual_seed(seed + 1)
        save_weights(randomize_bn(Denoiser(SMALL)), folder / f"{name}.safetensors")
    return folder


@pytest.fixture
def data(tmp_path: Path, rng: np.random.Generator) -> Path:
    return synthetic_data(tmp_path / "data", rng)


def scorer(data: Path, weights: Path) -> Scorer:
    """A Scorer whose own (default) model is a third random one."""
    torch.manual_seed(7)
    return Scorer(data, randomize_bn(Denoiser(SMALL)), CPU, log=QUIET, weights_folder=weights)


def test_a_check_naming_a_model_scores_that_model(data: Path, weights: Path) -> None:
    checks = [AccuracyCheck(name, model=name, limit=2) for name in ("alpha", "beta")] + [AccuracyCheck("own", limit=2)]
    alpha, beta, own = run_accuracy(scorer(data, weights), checks, "cd" * 32)
    direct = Scorer(data, load_denoiser(weights / "alpha.safetensors"), CPU, log=QUIET)
    assert alpha.psnr == pytest.approx(direct.score("bundled", "kodak24", 2, 25.0, 0)["psnr"], abs=1e-9)
    assert abs(alpha.psnr - beta.psnr) > 0.01 and abs(alpha.psnr - own.psnr) > 0.01
    assert [o.status for o in (alpha, beta, own)] == ["no-baseline"] * 3 and "bundled alpha on" in alpha.message
    assert alpha.weights_sha256 == sha256_file(weights / "alpha.safetensors") and alpha.model == "alpha"
    assert beta.weights_sha256 == sha256_file(weights / "beta.safetensors")
    assert own.weights_sha256 == "cd" * 32 and own.model is None


def test_named_models_are_loaded_once_and_keyed_by_name(data: Path, weights: Path) -> None:
    s = scorer(data, weights)
    row = s.score("bundled", "kodak24", 2, 25.0, 0, model="beta")
    assert row["model"] == "beta" and "beta" in row["method"]
    assert s.score("bundled", "kodak24", 2, 25.0, 0)["model"] is None
    assert s.score("bundled", "kodak24", 2, 25.0, 0, model="beta") is row and len(s.done) == 2
    assert s.bundled("beta")[0] is s.bundled("beta")[0]
    with pytest.raises(ValueError, match="for method 'bundled' only"):
        s.score("ffdnet", "kodak24", 2, 25.0, 0, model="beta")


def test_a_model_not_bundled_errors_with_a_baseline_and_skips_without(data: Path, weights: Path) -> None:
    recorded, unrecorded = AccuracyCheck("k", model="sigma35", limit=2, psnr=30.0), AccuracyCheck("u", model="sigma35")
    error, skip = run_accuracy(scorer(data, weights), [recorded, unrecorded], None)
    assert error.status == "error" and skip.status == "no-baseline" and skip.psnr is None
    for outcome in (error, skip):
        assert "'sigma35' is not bundled" in outcome.message and "(bundled: alpha, beta)" in outcome.message
        assert "\n" not in outcome.message
    assert "skipped" in skip.message


def test_model_is_only_for_bundled_checks() -> None:
    with pytest.raises(ValueError, match="for method 'bundled' only"):
        AccuracyCheck("k", method="ffdnet", model="sigma25")
    with pytest.raises(ValueError, match="must name bundled weights"):
        AccuracyCheck("k", model=25)
    assert AccuracyCheck("k").model is None


def test_record_baselines_writes_each_entrys_own_digest(data: Path, weights: Path, tmp_path: Path) -> None:
    path = tmp_path / "baselines.json"
    entries = {"a": {"model": "alpha", "limit": 2}, "own": {"limit": 2}, "peer": {"method": "ffdnet", "psnr": 30.0}}
    path.write_text(json.dumps({"about": "test", "checks": entries}))
    checks = load_baselines(path)
    outcomes = run_accuracy(scorer(data, weights), [checks["a"], checks["own"]], "cd" * 32)
    facts = {"commit": "c0ffee", "versions": {"torch": "2.13.0"}, "cpu": "Test CPU", "cores": 2, "gpu": None}
    record_baselines(path, {o.key: o.psnr for o in outcomes}, {o.key: o.weights_sha256 for o in outcomes}, facts)
    after = load_baselines(path)
    assert after["a"].weights_sha256 == sha256_file(weights / "alpha.safetensors") and after["a"].model == "alpha"
    assert after["own"].weights_sha256 == "cd" * 32 and after["own"].model is None
    assert after["a"].psnr == round(outcomes[0].psnr, 3) and after["peer"] == checks["peer"]


def test_record_script_measures_named_models_and_leaves_out_missing_ones(
    data: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = importlib.util.spec_from_file_location("record_baselines", ROOT / "bench" / "record_baselines.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    own = tmp_path / "own.safetensors"
    save_weights(randomize_bn(Denoiser(SMALL)), own)
    path = tmp_path / "baselines.json"
    entries = {"a": {"model": "alpha", "limit": 2}, "own": {"limit": 2}, "gone": {"model": "sigma35", "limit": 2}}
    path.write_text(json.dumps({"about": "test", "checks": entries}))
    common = ["--data", str(data), "--weights-folder", str(weights), "--baselines", str(path), "--weights", str(own)]
    assert script.main(common) == 0
    assert f"left out, not bundled in {weights}: gone (model 'sigma35')" in capsys.readouterr().out
    after = load_baselines(path)
    assert after["a"].weights_sha256 == sha256_file(weights / "alpha.safetensors") and after["a"].psnr is not None
    assert after["own"].weights_sha256 == sha256_file(own) and after["gone"].psnr is None
    before = path.read_text()
    with pytest.raises(SystemExit) as refused:  # asked for by name: refused before measuring anything
        script.main([*common, "--keys", "own,gone"])
    assert refused.value.code == 2 and "gone (model 'sigma35')" in capsys.readouterr().err
    (data / "kodak24" / "kodim01.png").write_bytes(b"changed")
    assert script.main([*common, "--keys", "own,a"]) == 1  # the data fails its checksum: nothing written
    assert "own: not measured: " in capsys.readouterr().out and path.read_text() == before


def test_shipped_per_sigma_entries_skip_where_their_models_are_not_bundled(data: Path, weights: Path) -> None:
    from fastdenoise.evaluation.accuracy import DEFAULT_BASELINES
    from fastdenoise.evaluation.benchmark import PROFILES
    from fastdenoise.evaluation.report import accuracy_failed

    checks = [c for c in load_baselines(DEFAULT_BASELINES).values() if c.model is not None]
    assert {c.model for c in checks} >= {"sigma15", "sigma25", "sigma35", "sigma50"}
    assert all(c.key in PROFILES["full"].accuracy and c.key not in PROFILES["quick"].accuracy for c in checks)
    unrecorded = [dataclasses.replace(c, psnr=None) for c in checks]  # as before they were recorded
    outcomes = run_accuracy(scorer(data, weights), unrecorded, None)  # a folder without them: as not bundled
    assert outcomes and all(o.status == "no-baseline" and "is not bundled" in o.message for o in outcomes)
    assert accuracy_failed({"accuracy": [o.__dict__ for o in outcomes]}) == []

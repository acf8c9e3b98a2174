"""The bundled models' table (fastdenoise.models.catalog) against the files in fastdenoise/weights/, and the choices
zoo derives from it."""

import json
from dataclasses import replace

import pytest
from safetensors import safe_open

from fastdenoise.choices import Task
from fastdenoise.models import catalog, zoo
from fastdenoise.models.checkpoint import DEFAULT_WEIGHTS, bundled_weights

FOLDER = bundled_weights().parent


def metadata(name: str) -> tuple[dict, dict]:
    """A bundled file's architecture spec and its card (the JSON beside it)."""
    with safe_open(str(FOLDER / f"{name}.safetensors"), framework="pt") as handle:
        spec = json.loads(handle.metadata()["spec"])
    return spec, json.loads((FOLDER / f"{name}.json").read_text())


def test_every_bundled_file_is_in_the_table_and_every_entry_has_its_file():
    assert sorted(p.stem for p in FOLDER.glob("*.safetensors")) == sorted(m.name for m in catalog.MODELS)
    assert zoo.bundled_models() == sorted(m.name for m in catalog.MODELS)


@pytest.mark.parametrize("model", catalog.MODELS, ids=lambda m: m.name)
def test_each_entry_says_what_its_file_is(model):
    spec, card = metadata(model.name)
    assert spec.get("noise_map", False) == model.noise_map
    if model.sigma is not None:  # a per-sigma model was trained at its level alone
        assert card["sigma_range"] == [model.sigma, model.sigma]
    assert ("jpeg_quality" in card) == model.jpeg  # the JPEG model was trained on patches stored as JPEG


def test_the_table_has_one_default_and_one_jpeg_model():
    assert [m.name for m in catalog.MODELS if m.default] == ["blind"] and DEFAULT_WEIGHTS == "blind.safetensors"
    assert [m.name for m in catalog.MODELS if m.jpeg] == ["jpeg"]
    assert catalog.bundled_model("sigma25").file == "sigma25.safetensors"
    with pytest.raises(ValueError, match="not a bundled model; choose one of blind, sigma15"):
        catalog.bundled_model("sigma30")


def test_the_choices_come_from_the_table(monkeypatch):
    assert zoo.per_sigma_models() == {15.0: "sigma15", 25.0: "sigma25", 35.0: "sigma35", 50.0: "sigma50"}
    assert zoo.task_model(Task.CLASSIFY) == zoo.task_model("segment") == "task-aware"
    assert zoo.jpeg_model() == FOLDER / "jpeg.safetensors"
    moved = tuple(
        replace(
            m,
            sigma=None if m.sigma else 30.0 if m.name == "joint-segment" else None,
            tasks=(Task.SEGMENT,) if m.name == "joint-segment" else (),
        )
        for m in catalog.MODELS
    )
    monkeypatch.setattr(zoo, "MODELS", moved)  # a table that says otherwise is followed, whatever the file names
    assert zoo.per_sigma_models() == {30.0: "joint-segment"} and zoo.task_model("classify") is None
    assert zoo.choose_weights(None, None, 33.0) == FOLDER / "joint-segment.safetensors"
    assert zoo.task_model("segment") == "joint-segment"

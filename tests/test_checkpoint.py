import json
import pickle

import pytest
import torch
from helpers import SMALL

from fastdenoise.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_denoiser,
    read_card,
    save_checkpoint,
    save_weights,
)
from fastdenoise.models.denoiser import Denoiser


def test_weights_round_trip_with_spec_and_card(tmp_path):
    model = Denoiser(SMALL).eval()
    save_weights(model, tmp_path / "w.safetensors", {"data": "generated"})
    loaded = load_denoiser(tmp_path / "w.safetensors")
    assert loaded.spec == SMALL
    x = torch.rand(1, 3, 19, 23)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert read_card(tmp_path / "w.safetensors") == {"data": "generated"}
    assert not list(tmp_path.glob("*.part"))


def test_bundled_default_loads():
    model = load_denoiser()
    assert sum(p.numel() for p in model.parameters()) > 1e6


def test_corrupt_and_missing_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_denoiser(bad)
    with pytest.raises(CheckpointError, match="no such"):
        load_denoiser(tmp_path / "absent.pt")
    truncated = tmp_path / "t.pt"
    save_checkpoint({"model": Denoiser(SMALL).state_dict()}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_denoiser(truncated)


def test_other_architecture_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    save_checkpoint({"model": torch.nn.Conv2d(3, 3, 3).state_dict(), "spec": {}}, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_denoiser(path)


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Exploit()}))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out
    message = str(refused.value)
    assert "never unpickled" in message
    assert "weights_only" not in message and "trust" not in message and "\n" not in message  # no advice to load it


def lying_copy(path, tmp_path, **widths):
    """The same tensors with a spec in the metadata that claims other widths."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        meta, state = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    meta["spec"] = json.dumps(json.loads(meta["spec"]) | widths)
    out = tmp_path / "lying.safetensors"
    save_file(state, str(out), metadata=meta)
    return out


@pytest.mark.parametrize("width", [200_000, 12_000])
def test_a_spec_that_lies_about_the_widths_is_refused_before_any_model_is_built(tmp_path, width, monkeypatch):
    import fastdenoise.models.checkpoint as checkpoint_module

    path = tmp_path / "w.safetensors"
    save_weights(Denoiser(SMALL), path)
    built = []
    real = checkpoint_module.Denoiser

    def spy(spec):  # a model built for real (not on the meta device) with the lying widths would take > 6 GB
        built.append(torch.get_default_device().type)
        return real(spec)

    monkeypatch.setattr(checkpoint_module, "Denoiser", spy)
    with pytest.raises(CheckpointError, match="lying.safetensors: weights do not fit"):
        load_denoiser(lying_copy(path, tmp_path, c1=width, c2=width, c3=width))
    assert built == ["meta"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_are_refused(tmp_path, bad):
    model = Denoiser(SMALL)
    with torch.no_grad():
        model.enc1.conv[0].weight[0, 0, 1, 1] = bad
    save_weights(model, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="NaN or Inf values \\(enc1.conv.0.weight\\)"):
        load_denoiser(tmp_path / "w.safetensors")


def test_weights_with_a_250_byte_name_are_saved(tmp_path):
    path = tmp_path / ("w" * 238 + ".safetensors")
    save_weights(Denoiser(SMALL), path)
    assert load_denoiser(path).spec == SMALL and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_half_precision_weights_are_half_the_bytes_and_load_as_the_fp32_model(tmp_path):
    from helpers import SMALL, randomize_bn

    from fastdenoise.models.checkpoint import load_denoiser, save_weights
    from fastdenoise.models.denoiser import Denoiser

    model = randomize_bn(Denoiser(SMALL))
    save_weights(model, tmp_path / "full.safetensors")
    save_weights(model, tmp_path / "half.safetensors", half=True)
    full, half = (tmp_path / "full.safetensors").stat().st_size, (tmp_path / "half.safetensors").stat().st_size
    assert half < 0.6 * full
    loaded = load_denoiser(tmp_path / "half.safetensors")
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=2e-3)
    with torch.no_grad():
        model.conv0[0].weight[0, 0, 0, 0] = 1e6  # past fp16's range
    with pytest.raises(ValueError, match="overflow fp16"):
        save_weights(model, tmp_path / "big.safetensors", half=True)

import pickle

import pytest
import torch

from fastdenoise.checkpoint import CheckpointError, load_checkpoint, load_denoiser, read_card, save_checkpoint, save_weights
from fastdenoise.model import Denoiser
from helpers import SMALL


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
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out

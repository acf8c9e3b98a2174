"""Weights and training checkpoints on disk: safetensors for weights, weights_only torch files for state; atomic."""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from fastdenoise.files import atomic_write
from fastdenoise.models.catalog import DEFAULT
from fastdenoise.models.denoiser import Denoiser, DenoiserSpec

DEFAULT_WEIGHTS = DEFAULT.file  # the bundled default (models.catalog)


class CheckpointError(ValueError):
    """A weights or checkpoint file that cannot be used; the message names the file and the reason."""


def save_weights(model: Denoiser, path: Path, card: dict | None = None, half: bool = False) -> None:
    """Write the model's fp32 (or, `half`, fp16: half the bytes) state dict as safetensors, with its spec (and an
    optional card) as metadata. Loading turns either into the fp32 model."""
    from safetensors.torch import save

    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to(dtype).cpu().contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
    if half and not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise ValueError(f"{path}: these weights overflow fp16; save them in fp32")
    meta = {"spec": json.dumps(asdict(model.spec)), "format": "fastdenoise-denoiser-v1"}
    if card:
        meta["card"] = json.dumps(card)
    blob = save(state, metadata=meta)
    atomic_write(Path(path), lambda handle: handle.write(blob))


def bundled_weights(name: str = DEFAULT_WEIGHTS) -> Path:
    """Path of a weights file shipped inside the package."""
    return Path(str(resources.files("fastdenoise") / "weights" / name))


def key_mismatch(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    """The keys a state dict gets wrong, three of each kind at most: "missing: a, b; wrong shape: c ..."."""
    kinds = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
    return "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for what, keys in kinds if keys)


def load_denoiser(path: Path | None = None) -> Denoiser:
    """Build a Denoiser from a .safetensors file or a training checkpoint (.pt: its weight average where it keeps one);
    None loads the bundled default."""
    path = Path(path) if path is not None else bundled_weights()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        state, spec = _read_safetensors(path)
    else:
        ckpt = load_checkpoint(path)
        if "model" not in ckpt:
            raise CheckpointError(f"{path}: not a fastdenoise checkpoint (no 'model' entry)")
        # the average is the model
        state, spec = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"], ckpt.get("spec", {})
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: its 'model' entry is not a state dict of tensors")
    try:
        arch = DenoiserSpec(**spec)
        with torch.device("meta"):  # shapes only: a spec that lies about the widths allocates nothing
            expected = Denoiser(arch).state_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: bad architecture spec ({err})") from err
    missing = [k for k in expected if k not in state and expected[k].is_floating_point()]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = key_mismatch(missing, unexpected, wrong)
        raise CheckpointError(f"{path}: weights do not fit the denoiser architecture ({detail})")
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        more = " ..." if len(broken) > 3 else ""
        raise CheckpointError(f"{path}: weights hold NaN or Inf values ({', '.join(broken[:3])}{more}); not used")
    model = Denoiser(arch)
    model.load_state_dict(state, strict=False)
    return model.eval()


def read_card(path: Path | None = None) -> dict:
    """The JSON card stored in a weights file's metadata ({} if none)."""
    _, _, meta = _read_safetensors(Path(path) if path else bundled_weights(), with_meta=True)
    return json.loads(meta.get("card", "{}"))


def _read_safetensors(path: Path, with_meta: bool = False) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}
        spec = json.loads(meta.get("spec", "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable weights file ({err})") from err
    return (state, spec, meta) if with_meta else (state, spec)


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomically write a training checkpoint (tensors and plain Python values only); a write that fails (disk full)
    raises the OSError it met, naming path, and leaves the checkpoint there before intact."""
    try:
        atomic_write(Path(path), lambda handle: torch.save(state, handle))
    except RuntimeError as err:  # torch's zip writer, closing after a failed write, hides that OSError under its own
        if not isinstance(err.__context__, OSError):
            raise
        raise OSError(err.__context__.errno, err.__context__.strerror, str(path)) from None


def load_checkpoint(path: Path) -> dict:
    """Load a training checkpoint without unpickling code (weights_only=True)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint") from err
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(f"{path}: unreadable checkpoint ({load_failure(err)})") from err


def load_failure(err: Exception) -> str:
    """Why torch.load refused a file, in one line, without torch's advice to load it with weights_only=False (which
    would run whatever code the file holds: never)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        after = text.split("WeightsUnpickler error:", 1)[1].strip()
        reason = after.splitlines()[0].split(". Please", 1)[0] if after else ""
        return f"it holds Python objects besides tensors, which are never unpickled: {reason[:200]}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    if "weights_only" in first or "trust" in first:
        return type(err).__name__
    return f"{type(err).__name__}: {first[:200]}"

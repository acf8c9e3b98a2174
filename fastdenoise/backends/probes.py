"""The probe cache of `--backend auto`: MP/s per backend for each machine, architecture, precision and probe shape, with
the candidates no run has timed yet; one JSON file, rewritten whole and atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from fastdenoise.backends import BackendKind
from fastdenoise.files import atomic_write, note

KINDS = {k.value for k in BackendKind if k is not BackendKind.auto}  # what a probe times


def architecture_sha256(module: nn.Module) -> str:
    """Digest of a module's layers (state names, shapes, dtypes), not of its values: the per-sigma weights, the blind
    and the JPEG model run at the same speed, so one probe serves them all."""
    state = dict(module.state_dict())
    state |= {name: value for name, value in module.named_buffers() if name not in state}
    layout = [f"{name}:{tuple(value.shape)}:{value.dtype}" for name, value in sorted(state.items())]
    return hashlib.sha256("\n".join(layout).encode()).hexdigest()


def entry_speeds(entry: object) -> dict[str, float | str] | None:
    """A probe's MP/s (or why not) per backend name from a cache entry; None for one no probe wrote (garbage, a
    foreign or hand-made entry)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("mp_per_s"), dict):
        return None
    speeds = entry["mp_per_s"]
    if entry.get("chosen") not in speeds or not isinstance(speeds[entry["chosen"]], (int, float)):
        return None
    if not all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in speeds.values()):
        return None
    if not set(speeds) <= KINDS:
        return None
    return {k: float(v) if isinstance(v, (int, float)) else v for k, v in speeds.items()}


class ProbeCache:
    """auto.json in the cache folder (default: `engines.export.default_cache_dir`); an unreadable or foreign file is
    passed over with one note per cache and rewritten by the next probe."""

    def __init__(self, folder: Path | str | None = None) -> None:
        from fastdenoise.engines.export import default_cache_dir

        self.path = (Path(folder) if folder is not None else default_cache_dir()) / "auto.json"
        self.noted = False

    def read(self) -> dict:
        """The whole cache; {} where there is none yet, or where it is not one (noted)."""
        try:
            known = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            self.note(f"not readable as a probe cache ({type(err).__name__}: {str(err)[:80]})")
            return {}
        if not isinstance(known, dict):
            self.note(f"not a probe cache (a JSON {type(known).__name__})")
            return {}
        return known

    def speeds(self, key: str) -> dict[str, float | str]:
        """The cached MP/s (or why not) per backend for `key`; {} where none is cached or the entry is not a probe's."""
        known = self.read()
        if key not in known:
            return {}
        speeds = entry_speeds(known[key])
        if speeds is None:
            self.note(f"its entry for this machine, weights and shape ({known[key]!r:.80}) is not a probe's")
            return {}
        return speeds

    def store(self, key: str, speeds: dict, chosen: object, left: list[str], shape: list[int]) -> None:
        """Write one key's probe (re-reading first: another process may have written meanwhile)."""
        known = self.read()
        known[key] = {
            "chosen": getattr(chosen, "value", chosen),
            "mp_per_s": speeds,
            "left": left,
            "probe_shape": shape,
        }
        try:
            atomic_write(self.path, lambda f: f.write(json.dumps(known, indent=1, sort_keys=True).encode()))
        except OSError:
            pass  # an unwritable cache costs a probe next time, nothing else

    def note(self, problem: str) -> None:
        """Say once per cache that it was passed over, and why."""
        if not self.noted:
            self.noted = True
            note(f"{self.path}: {problem}; ignored, probing again (the probe rewrites it)")


def speeds_text(speeds: dict) -> str:
    """{'eager': 0.09, 'openvino': 0.12, 'onnxruntime': 'ImportError: ...'} -> 'openvino 0.120, eager 0.090 MP/s,
    onnxruntime unavailable'."""
    timed = sorted(((v, k) for k, v in speeds.items() if isinstance(v, (int, float))), reverse=True)
    failed = [k for k, v in speeds.items() if not isinstance(v, (int, float))]
    text = ", ".join(f"{k} {v:.3f}" for v, k in timed) + " MP/s" if timed else "nothing timed"
    return text + (f", {', '.join(failed)} unavailable" if failed else "")

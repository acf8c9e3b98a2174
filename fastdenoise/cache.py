"""The model cache under $FASTDENOISE_CACHE (default ~/.cache/fastdenoise): ONNX exports, OpenVINO IR and compiled
blobs, TensorRT engines, the auto probe. Each export, IR and blob has a JSON sidecar `<name>.json` recording what it
was made from and the sha256 of its files: an entry is used only when its sidecar matches what the caller asks for.
Past a size budget ($FASTDENOISE_CACHE_MAX, default 2G) the least recently used entries go."""

from __future__ import annotations

import functools
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from fastdenoise.files import atomic_write, note, sha256_file

BUDGET_ENV = "FASTDENOISE_CACHE_MAX"
DEFAULT_BUDGET = "2G"
MANAGED = ("onnx", "openvino", "engines", "auto.json")  # bench/ results and the cbm3d/ output cache are not ours here
SUFFIXES = (".json", ".onnx", ".xml", ".bin", ".blob", ".engine", ".cache")  # stripped from a name: its entry's name
PART_AGE_S = 3600  # a temporary file older than this is a killed writer's, not one at work
UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def sidecar_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".json")


def plain(facts: dict) -> dict:
    """facts as JSON gives them back (tuples become lists), so a sidecar's record compares equal."""
    return json.loads(json.dumps(facts, sort_keys=True))


def write_sidecar(path: Path, facts: dict, members: tuple[Path, ...]) -> None:
    """Record facts and the sha256 of each member file beside path (after the members are in place)."""
    record = plain(facts) | {"sha256": {m.name: sha256_file(m) for m in members}}
    atomic_write(sidecar_path(path), lambda f: f.write(json.dumps(record, indent=1, sort_keys=True).encode()))


def entry_problem(path: Path, facts: dict, members: tuple[Path, ...]) -> str | None:
    """Why the cached entry at path may not be used for `facts` (None: it may; its use is then recorded)."""
    try:
        record = json.loads(sidecar_path(path).read_bytes())
    except FileNotFoundError:
        return "no sidecar says what it was made from"
    except (OSError, ValueError) as err:
        return f"unreadable sidecar ({type(err).__name__})"
    if not isinstance(record, dict):
        return "its sidecar is not a record"
    differ = sorted(k for k, v in plain(facts).items() if record.get(k) != v)
    if differ:
        return f"made from other {', '.join(differ)} than asked for"
    sums = record.get("sha256") if isinstance(record.get("sha256"), dict) else {}
    for member in members:
        try:
            if sums.get(member.name) != sha256_file(member):
                return f"{member.name} is not the file its sidecar records (corrupt or replaced)"
        except OSError as err:
            return f"{member.name}: {err.strerror}"
    touch(path)
    return None


def touch(path: Path) -> None:
    """Mark an entry used now: its access time (eviction goes by the latest access or change of an entry's files; the
    modification time stays the file's)."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except OSError:
        pass  # a read-only cache still serves


@dataclass(frozen=True)
class Entry:
    """One cached thing: its files (the artefact, its sidecar, an IR's .bin), their bytes, when last used."""

    name: str  # relative to the cache folder, known suffixes off
    files: tuple[Path, ...]
    size: int
    used: float


def entry_name(rel: str) -> str:
    stem = rel
    while any(stem.endswith(s) and len(stem) > len(s) for s in SUFFIXES):
        stem = stem[: stem.rfind(".")]
    return stem


def entries(root: Path) -> list[Entry]:
    """The cache's entries under root's managed folders, least recently used first; links are never followed."""
    groups: dict[str, list[tuple[Path, os.stat_result]]] = {}
    for path in managed_files(Path(root)):
        try:
            st = path.lstat()
        except OSError:
            continue
        groups.setdefault(entry_name(path.relative_to(root).as_posix()), []).append((path, st))
    found = [
        Entry(name, tuple(p for p, _ in group), sum(st.st_size for _, st in group), last_use(group))
        for name, group in groups.items()
    ]
    return sorted(found, key=lambda e: (e.used, e.name))


def last_use(group: list[tuple[Path, os.stat_result]]) -> float:
    return max(max(st.st_atime, st.st_mtime) for _, st in group)


def managed_files(root: Path) -> list[Path]:
    found = []
    for name in MANAGED:
        top = root / name
        if top.is_symlink() or not top.exists():
            found += [top] if top.is_symlink() else []
            continue
        if not top.is_dir():
            found.append(top)
            continue
        for folder, dirs, files in os.walk(top):  # does not descend into linked folders
            found += [Path(folder, f) for f in files] + [Path(folder, d) for d in dirs if Path(folder, d).is_symlink()]
    return found


def remove(entry: Entry) -> bool:
    """Unlink an entry's files (never what a link points to); False where the cache is not ours to change."""
    try:
        for path in entry.files:
            path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def clear(root: Path) -> tuple[int, int]:
    """Remove every entry; returns (entries, bytes) removed."""
    found = entries(root)
    gone = [e for e in found if remove(e)]
    return len(gone), sum(e.size for e in gone)


def trim(root: Path, budget: int | None = None, keep: tuple[Path, ...] = ()) -> list[Entry]:
    """Remove the least recently used entries until the cache holds at most `budget` bytes (default: the env's or
    2G); entries holding a `keep` file stay, and so do the hidden `.part` files of writers (those of the last hour:
    older ones a killed writer left)."""
    budget = lenient_budget(os.environ.get(BUDGET_ENV)) if budget is None else budget
    found = entries(root)
    total = sum(e.size for e in found)
    kept = {Path(p) for p in keep}
    gone = []
    for entry in found:
        if total <= budget:
            break
        writing = any(p.name.startswith(".") for p in entry.files) and entry.used > time.time() - PART_AGE_S
        if kept & set(entry.files) or writing:
            continue
        if remove(entry):
            gone.append(entry)
            total -= entry.size
    return gone


def parse_size(text: str) -> int:
    """'2G', '500M', '1.5G', '123456' -> bytes (decimal units); ValueError naming what is allowed."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text.upper())
    if not match:
        raise ValueError(f"{text!r} is not a size: a number of bytes, or one with K, M, G or T (2G, 500M)")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def cache_budget() -> int:
    """Bytes the cache may hold: $FASTDENOISE_CACHE_MAX, else 2G."""
    text = os.environ.get(BUDGET_ENV, DEFAULT_BUDGET)
    try:
        return parse_size(text)
    except ValueError as err:
        raise ValueError(f"{BUDGET_ENV}: {err}") from None


@functools.cache
def lenient_budget(_text: str | None) -> int:
    """cache_budget(), or the default with one note per process where the env's text is not a size."""
    try:
        return cache_budget()
    except ValueError as err:
        note(f"{err}; the cache is kept to {DEFAULT_BUDGET}")
        return parse_size(DEFAULT_BUDGET)


def size_text(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def age_text(used: float, now: float | None = None) -> str:
    seconds = max(0.0, (now or time.time()) - used)
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit}"
    return f"{seconds:.0f} s"

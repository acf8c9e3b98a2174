"""Which files a run takes: INPUT as a folder (searched recursively) or as one image file, narrowed by --include and
--exclude globs matched against each file's path relative to INPUT (`*` also crosses `/`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from fastdenoise.images import EXTENSIONS, Entry, iter_entries


def selected(rel: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """True when rel matches an include glob (or none are given) and no exclude glob."""
    if include and not any(fnmatchcase(rel, pattern) for pattern in include):
        return False
    return not any(fnmatchcase(rel, pattern) for pattern in exclude)


def list_inputs(src: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Iterator[Entry]:
    """The entries a run over src takes, in order: those under a folder (`images.iter_entries`) that are `selected`;
    a single file as itself, named by its file name (its output goes straight into OUTPUT)."""
    src = Path(src)
    if src.is_dir():
        return (e for e in iter_entries(src) if selected(e.rel, include, exclude))
    problem = None if src.suffix.lower() in EXTENSIONS else f"not an image extension ({src.suffix or 'none'})"
    return iter([Entry(src, src.name, problem)])


def lists_everything(src: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """True when a run lists every input of its OUTPUT's manifest (a folder, no --include/--exclude); a narrowed or
    single-file run's rows join the manifest's others instead of replacing them."""
    return not (include or exclude) and Path(src).is_dir()


def predicted_megapixels(entries: Sequence[Entry], sample: int = 64) -> float:
    """The megapixels of the images among entries, from the headers of at most `sample` of them spread evenly (a
    folder of 100,000 files is not opened whole to size a probe budget); unreadable ones count as nothing."""
    from fastdenoise.images import ImageError, read_header

    images = [e for e in entries if e.problem is None]
    if not images:
        return 0.0
    picked = images[:: max(1, -(-len(images) // sample))]
    total = 0.0
    for entry in picked:
        try:
            header = read_header(entry.path)
        except (ImageError, OSError):
            continue
        total += header.height * header.width / 1e6
    return total * len(images) / len(picked)

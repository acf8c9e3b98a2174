"""Files written whole or not at all, files opened without following planted links, and file digests: the one place
the package writes a file atomically or hashes one."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# Longest file name most file systems take (ext4, XFS, btrfs, tmpfs: 255 bytes); pathconf gives the real one.
NAME_MAX = 255
# mkstemp adds "." + 8 random characters; the temporary name adds a leading "." and ".part" around the final name
_TEMP_EXTRA = 1 + 9 + 5


def name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_folder(folder: Path) -> None:
    """Make a rename in folder durable (the folder's entry list reaches the disk)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, mode: str = "wb", **options: Any) -> Iterator[IO]:
    """Open a fresh temporary file beside path (a unique hidden `.<name>.XXXXXXXX.part`, or a hashed name where that
    would be too long); on a clean exit it is fsynced, renamed over path and the folder fsynced, so path holds either
    its old content or the whole new one, also after a power cut. On an exception the temporary file is removed.
    The temporary file is created with O_EXCL, so a link planted at its name is never written through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    limit = min(NAME_MAX, name_max(path.parent))
    short = len(os.fsencode(path.name)) + _TEMP_EXTRA <= limit
    stem = path.name if short else hashlib.sha256(os.fsencode(path.name)).hexdigest()[:32]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=path.parent)
    try:
        with open(fd, mode, **options) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the final file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write(path: Path, write: Callable[[IO], Any], mode: str = "wb", **options: Any) -> None:
    """Call write(handle) on a fresh temporary file beside path, then put it at path (see `atomic_file`)."""
    with atomic_file(path, mode, **options) as handle:
        write(handle)


def open_own(path: Path, flags: int) -> int:
    """os.open of a file the run keeps in OUTPUT (its manifest part, its lock), never through a link planted at that
    name (ValueError naming it)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path}: is a symlink, not written through; remove it") from None
        raise


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

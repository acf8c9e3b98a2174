"""Files written whole or not at all, files opened without following planted links, and file digests: the one place
the package writes a file atomically or hashes one; `note` says when a cache file was found unusable and rebuilt."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# Longest file name most file systems take (ext4, XFS, btrfs, tmpfs: 255 bytes); pathconf gives the real one.
NAME_MAX = 255


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


def temporary_file(path: Path, unique: bool) -> tuple[int, str]:
    """Create the hidden temporary file beside path, O_EXCL | O_NOFOLLOW (a link planted at its name is never written
    through): `.<name>.part`, first removing a leftover of a killed writer, or with `unique` a fresh
    `.<name>.XXXXXXXX.part` (for files several processes may write at once); a name too long for the extra bytes
    becomes its hash."""
    extra = 15 if unique else 6  # ".", ".part" and mkstemp's "." + 8 random characters
    short = len(os.fsencode(path.name)) + extra <= min(NAME_MAX, name_max(path.parent))
    stem = path.name if short else hashlib.sha256(os.fsencode(path.name)).hexdigest()[:32]
    if unique:
        return tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=path.parent)
    tmp = path.with_name(f".{stem}.part")
    tmp.unlink(missing_ok=True)
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), str(tmp)


@contextmanager
def atomic_file(path: Path, mode: str = "wb", unique: bool = True, **options: Any) -> Iterator[IO]:
    """Open a fresh temporary file beside path (`temporary_file`); on a clean exit it is fsynced, renamed over path
    and the folder fsynced, so path holds either its old content or the whole new one, also after a power cut. On an
    exception the temporary file is removed. `unique=False` for files only one process writes (a run's outputs under
    its lock), so that the next run replaces what a killed one left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path, unique)
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


def atomic_write(path: Path, write: Callable[[IO], Any], mode: str = "wb", unique: bool = True, **options: Any) -> None:
    """Call write(handle) on a fresh temporary file beside path, then put it at path (see `atomic_file`)."""
    with atomic_file(path, mode, unique, **options) as handle:
        write(handle)


SPECIAL_FILES = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def check_replaceable(path: Path) -> None:
    """Raise ValueError naming path unless nothing is there, or a regular file or a symlink (which an atomic write
    replaces, never writes through): a FIFO, device, socket or folder at the name is not for us to replace."""
    try:
        kind = stat.S_IFMT(os.lstat(path).st_mode)
    except FileNotFoundError:
        return
    if kind in SPECIAL_FILES:
        raise ValueError(f"{path}: is {SPECIAL_FILES[kind]}, not a regular file; not replaced")


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


def note(message: str) -> None:
    """One line on stderr for something set right on the way (a corrupt cache file rebuilt, say)."""
    print(f"note: {' '.join(message.split())}", file=sys.stderr, flush=True)

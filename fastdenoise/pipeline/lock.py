"""The output lock: one run per OUTPUT (per rank under torchrun), held as an flock on OUTPUT/.fastdenoise.rank<N>.lock
that the kernel drops when its holder dies however it dies; the file records pid, host and start time for the
message."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from fastdenoise.files import open_own


class LockError(ValueError):
    """Another live run holds the output folder; the message names it."""


def lock_name(rank: int) -> str:
    return f".fastdenoise.rank{rank}.lock"


def holder_text(facts: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(facts.get("started", 0)))
    return f"pid {facts.get('pid', '?')} on {facts.get('host', '?')}, started {started}"


def busy(dst: Path, facts: dict, name: str) -> LockError:
    return LockError(
        f"{dst}: another run is writing here ({holder_text(facts)}; lock {name}); wait for it or choose "
        "another output folder"
    )


def clear_ranks(dst: Path, world: int) -> None:
    """Lock files of ranks this run has not (a torchrun run's, resumed plainly): LockError while a holder lives (it
    still writes here); a dead holder's file is removed, locked so that no one takes it meanwhile."""
    for path in sorted(dst.glob(".fastdenoise.rank*.lock")):
        rank = path.name.removeprefix(".fastdenoise.rank").removesuffix(".lock")
        if not rank.isdigit() or int(rank) < world:
            continue
        try:
            fd = open_own(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise busy(dst, read_facts(fd), path.name) from None
        else:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def read_facts(fd: int) -> dict:
    try:
        facts = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) else {}


class OutputLock:
    """Taken on construction (LockError if a live run holds it), released by `release` or when the process ends.

    Atomic: the flock decides, not the file's existence, so two runs starting together cannot both win and a holder
    killed with SIGKILL does not keep it. `taken_over` describes the dead holder whose lock file was left behind."""

    def __init__(self, dst: Path, rank: int = 0, world: int = 1) -> None:
        self.path = Path(dst) / lock_name(rank)
        self.taken_over: str | None = None
        while True:
            fd = open_own(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                facts = read_facts(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise busy(dst, facts, self.path.name) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its previous holder unlinked while we waited to lock it
                break
            os.close(fd)
        self.fd = fd
        old = read_facts(fd)
        if old:
            self.taken_over = holder_text(old)
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode() + b"\n", 0)
        if rank == 0:
            try:
                clear_ranks(Path(dst), world)
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: a run waiting on this file sees it gone and retries
        os.close(self.fd)
        self.fd = None

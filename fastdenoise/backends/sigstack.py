"""A thread's alternate signal stack, kept as it was across calls into libraries that swap it.

OpenVINO's CPU plugin installs an alternate signal stack of its own on the thread that loads it (for AMX's large
signal frames) and unmaps it when the plugin is released, putting the old one back only if it is released on that same
thread. Released on another thread (a Core whose last reference a worker thread or a GC pass drops), it leaves the
loading thread's stack pointing at unmapped memory; the next signal handled there (Python runs its handlers, SIGINT and
SIGTERM included, with SA_ONSTACK) cannot be delivered and the kernel kills the process with SIGSEGV."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

SS_DISABLE = 2  # <bits/sigstack.h>: ss_flags of a thread with no alternate stack
AT_MINSIGSTKSZ = 51  # getauxval: the smallest signal frame this CPU and kernel need (AMX's tile data makes it ~11 KiB)
OWN_STACK_MIN = 64 * 1024
_owned: list[ctypes.Array[ctypes.c_char]] = []  # stacks this module installed: never freed, a signal may be on one


class StackT(ctypes.Structure):
    """`stack_t` of <signal.h> on Linux."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.sigaltstack.argtypes = [ctypes.POINTER(StackT), ctypes.POINTER(StackT)]
    libc.getauxval.argtypes, libc.getauxval.restype = [ctypes.c_ulong], ctypes.c_ulong
    return libc


def current() -> StackT | None:
    """This thread's alternate signal stack (ss_flags SS_DISABLE when it has none), or None where it cannot be read."""
    libc = _libc()
    stack = StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack


def _install(stack: StackT) -> bool:
    libc = _libc()
    assert libc is not None
    return libc.sigaltstack(ctypes.byref(stack), None) == 0


def _own_stack() -> StackT:
    """A stack that stays mapped for the life of the process, large enough for this CPU's signal frames."""
    libc = _libc()
    assert libc is not None
    size = max(OWN_STACK_MIN, 4 * int(libc.getauxval(AT_MINSIGSTKSZ)))
    memory = ctypes.create_string_buffer(size)
    _owned.append(memory)
    return StackT(ctypes.addressof(memory), 0, size)


def restore(before: StackT) -> None:
    """Put `before` back as this thread's alternate stack if something replaced it. Where the kernel refuses it (too
    small for the signal frames a library enabled since, e.g. AMX), a stack owned by this module takes its place."""
    now = current()
    if now is None or (now.ss_sp, now.ss_flags & SS_DISABLE) == (before.ss_sp, before.ss_flags & SS_DISABLE):
        return
    wanted = StackT(None, SS_DISABLE, 0) if before.ss_flags & SS_DISABLE else before
    if not _install(wanted) and not _install(_own_stack()):
        raise OSError(ctypes.get_errno(), f"sigaltstack: {os.strerror(ctypes.get_errno())}")


@contextmanager
def kept() -> Iterator[None]:
    """Within the block a library may replace this thread's alternate signal stack; after it the old one is back, so
    nothing the library unmaps later is left under this thread's signal handlers."""
    before = current()
    try:
        yield
    finally:
        if before is not None:
            restore(before)

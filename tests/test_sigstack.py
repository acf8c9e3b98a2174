"""A library that swaps a thread's alternate signal stack cannot leave it dangling (fastdenoise.backends.sigstack)."""

import ctypes
import importlib.util
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

from fastdenoise.backends import sigstack

linux_only = pytest.mark.skipif(sigstack.current() is None, reason="sigaltstack is read through Linux's libc")


def swap_in(size: int) -> ctypes.Array:
    """Install a fresh alternate stack on this thread, as OpenVINO's CPU plugin does when it loads."""
    memory = ctypes.create_string_buffer(size)
    assert sigstack._install(sigstack.StackT(ctypes.addressof(memory), 0, size))
    return memory


@linux_only
def test_kept_puts_the_old_stack_back_and_leaves_an_untouched_one_alone():
    before = sigstack.current()
    with sigstack.kept():
        library = swap_in(96 * 1024)
        assert sigstack.current().ss_sp == ctypes.addressof(library)
    after = sigstack.current()
    assert (after.ss_sp, after.ss_size, after.ss_flags) == (before.ss_sp, before.ss_size, before.ss_flags)
    with sigstack.kept():
        pass
    assert sigstack.current().ss_sp == before.ss_sp


@linux_only
def test_a_thread_without_a_stack_gets_none_back(tmp_path):
    script = """
        from fastdenoise.backends import sigstack
        import ctypes
        assert sigstack.current().ss_flags & sigstack.SS_DISABLE   # no faulthandler: no alternate stack
        with sigstack.kept():
            memory = ctypes.create_string_buffer(65536)
            assert sigstack._install(sigstack.StackT(ctypes.addressof(memory), 0, 65536))
        assert sigstack.current().ss_flags & sigstack.SS_DISABLE
        print("ok")
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# What crashed the test suite: the OpenVINO backend built on the main thread, released on another, then a signal.
RELEASED_ON_A_THREAD = """
    import faulthandler, gc, os, signal, threading, sys
    sys.path.insert(0, {tests!r})
    import torch
    from helpers import SMALL, randomize_bn
    from fastdenoise.models.denoiser import Denoiser
    from fastdenoise.backends.openvino import OpenVinoBackend
    if {faulthandler}:
        faulthandler.enable()   # pytest's own: an alternate stack of its own on the main thread
    got = []
    signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    backend = OpenVinoBackend(randomize_bn(Denoiser(SMALL)), torch.device("cpu"), torch.float32, cache_dir={cache!r})
    backend(torch.rand(1, 3, 20, 28))
    holder = [backend]
    del backend
    thread = threading.Thread(target=holder.clear)   # the last reference dropped there, as by a GC pass in a worker
    thread.start(); thread.join(); gc.collect()
    os.kill(os.getpid(), signal.SIGTERM)
    print("handled", got)
"""


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("openvino", "onnxscript")), reason="needs openvino and onnxscript"
)
@pytest.mark.parametrize("with_faulthandler", [pytest.param(True, marks=pytest.mark.slow), False])
def test_openvino_released_on_another_thread_then_a_signal_is_handled(tmp_path, with_faulthandler):
    script = RELEASED_ON_A_THREAD.format(
        tests=str(ROOT / "tests"), faulthandler=with_faulthandler, cache=str(tmp_path / "cache")
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 0, f"exit {done.returncode} (-11: SIGSEGV on a dangling signal stack): {done.stderr}"
    assert done.stdout.strip().endswith("handled [15]")

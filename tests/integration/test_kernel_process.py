"""The compiled kernel's choice and threads across processes: forks, a broken numba.

Each check runs in a fresh interpreter (``_run``): a hang is detected by a timeout there,
and the whole process group (the interpreter and any child it forked) is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chroma_sparse_ef.hybrid import _kernel

pytest.importorskip("numba", reason="the compiled kernel needs the fast extra")

_REPO = Path(__file__).resolve().parents[2]
#: A fresh interpreter imports numba and loads the cached kernel in ~2 s here (under
#: load); a cold numba cache compiles in ~7 s. A hang is anything well past that.
_SCRIPT_TIMEOUT = 60.0


def _run(script: str, **env: str) -> tuple[int | None, str, str]:
    """Run ``script`` in a fresh interpreter (this worktree first on the path).

    Returns ``(returncode, stdout, stderr)``, returncode None when it did not finish in
    `_SCRIPT_TIMEOUT`: its process group (it and any child it forked) is then killed.
    """
    full_env = {k: v for k, v in os.environ.items() if k != _kernel.KERNEL_ENV_VAR}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    full_env.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=_SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err
    return proc.returncode, out, err


_FORK_AND_SEARCH = """
    pid = os.fork()
    if pid == 0:
        print("child", index.search(np.array([1]), np.array([1.0]), 2), flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child status", status, flush=True)
"""


def test_a_search_in_a_forked_child_does_not_hang_after_the_parent_used_threads() -> None:
    """``os.fork`` (multiprocessing's default on Linux, gunicorn ``--preload``) after a
    query big enough for threads: the child's own big query must still be answered.

    The shared ThreadPoolExecutor is inherited without its threads; the child queues its
    parts on it and waits forever.
    """
    script = """
        import os
        import numpy as np
        from chroma_sparse_ef.hybrid import _kernel
        from chroma_sparse_ef.hybrid._index import SparseIndex
        _kernel.PARALLEL_MIN_POSTINGS = 0  # every query split over threads
        _kernel.THREADS = 2
        n = 1000
        index = SparseIndex.build([f"r{i}" for i in range(n)], [np.array([1, 2])] * n,
                                  [np.array([1.0, 2.0], np.float32)] * n)
        print("parent", index.search(np.array([1]), np.array([1.0]), 2), flush=True)
    """
    code, out, err = _run(textwrap.dedent(script) + textwrap.dedent(_FORK_AND_SEARCH))
    assert code == 0, f"hung or failed: {out!r} {err[-2000:]!r}"
    assert "child [('r0', 1.0), ('r1', 1.0)]" in out
    assert "child status 0" in out


def test_a_fork_while_the_kernel_compiles_in_the_background_leaves_the_child_working() -> None:
    """`warm_up` compiles in a thread holding the decision locks; a fork in that window
    (a worker pool started right after opening a collection) must not leave the child
    with locks nobody will release.

    The compile is held open until the fork starts (a fork handler registered after the
    kernel's own runs first), so the window is hit every time.
    """
    script = """
        import os, threading
        import numpy as np
        from chroma_sparse_ef.hybrid import _kernel
        from chroma_sparse_ef.hybrid._index import SparseIndex
        entered, release = threading.Event(), threading.Event()
        real = _kernel._compile
        def held_compile():
            entered.set()
            release.wait()
            return real()
        _kernel._compile = held_compile
        _kernel.warm_up()
        entered.wait()
        os.register_at_fork(before=release.set)
        index = SparseIndex.build(["r0", "r1"], [np.array([1])] * 2,
                                  [np.array([1.0], np.float32)] * 2)
    """
    code, out, err = _run(textwrap.dedent(script) + textwrap.dedent(_FORK_AND_SEARCH))
    assert code == 0, f"hung or failed: {out!r} {err[-2000:]!r}"
    assert "child [('r0', 1.0), ('r1', 1.0)]" in out
    assert "child status 0" in out


def test_numba_refusing_this_numpy_is_not_reported_as_numba_missing() -> None:
    """numba raises ImportError itself when numpy is newer than it supports (the usual
    way numba breaks after an upgrade). The reason must say so, not that numba is
    not installed (reinstalling the extra does not help).
    """
    script = """
        import numpy
        numpy.__version__ = "9.9.0"  # numba's own import check refuses it
        from chroma_sparse_ef.hybrid import _kernel
        print(_kernel.select_kernel("auto"))
    """
    code, out, err = _run(script)
    assert code == 0, err[-2000:]
    assert out.startswith("sparse index: numpy path")
    assert "not installed" not in out
    assert "Numba needs NumPy" in out


def test_describe_does_not_claim_a_compiled_kernel_when_numba_jit_is_disabled() -> None:
    """``NUMBA_DISABLE_JIT=1`` (coverage, debugging) turns `njit` into plain Python: the
    "kernel" then runs Python loops per posting, ~60x slower than the numpy path here,
    while `describe` says "compiled kernel". numpy must answer, and the reason say why.
    """
    script = """
        from chroma_sparse_ef.hybrid import _kernel
        print(_kernel.describe())
    """
    code, out, err = _run(script, NUMBA_DISABLE_JIT="1")
    assert code == 0, err[-2000:]
    assert out.startswith("sparse index: numpy path")
    assert "NUMBA_DISABLE_JIT" in out

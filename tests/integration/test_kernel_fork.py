"""A forked process (a pre-forking web server, multiprocessing) searches with threads of its own."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest

from chroma_sparse_ef.hybrid import _kernel
from chroma_sparse_ef.hybrid._index import SparseIndex

pytest.importorskip("numba", reason="the compiled kernel needs the fast extra")


@pytest.fixture(autouse=True)
def compiled() -> Iterator[None]:
    with _kernel.pinned("numba"):
        yield


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_searches_with_threads_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the parent used the thread pool, a forked child's split search still returns."""
    monkeypatch.setattr(_kernel, "PARALLEL_MIN_POSTINGS", 0)
    monkeypatch.setattr(_kernel, "THREADS", 2)
    index = SparseIndex.build(
        [f"r{i}" for i in range(500)], [np.array([1, 2])] * 500,
        [np.array([1.0, float(i)], np.float32) for i in range(500)],
    )  # fmt: skip
    expected = index.search(np.array([1, 2]), np.array([1.0, 1.0]), 3)
    assert expected == [("r499", 500.0), ("r498", 499.0), ("r497", 498.0)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        try:
            got = index.search(np.array([1, 2]), np.array([1.0, 1.0]), 3)
            os.write(write, repr(got).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's search did not return within 60 s")
    with os.fdopen(read) as f:
        assert f.read() == repr(expected)

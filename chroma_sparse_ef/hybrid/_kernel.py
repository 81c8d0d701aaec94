"""The compiled exhaustive path of `SparseIndex`: exact top-k in one pass over the postings.

numpy cannot score a query faster than ``np.add.at`` over every posting it gathers (about
2 ns each) followed by a top-k selection over every slot (``np.argpartition`` over 1M
floats alone takes several milliseconds). This kernel, compiled by numba when the
``fast`` extra is installed (``pip install 'chroma-sparse-ef[fast]'``), does both in one
pass, *document-blocked* (the classic term-at-a-time-within-a-block layout of
score-at-a-time engines): the slot space is cut into blocks of `BLOCK_SLOTS`, and for
each block every query term's postings in that block (found by binary search: postings
are ascending by slot within each run) are added into a small float64 buffer that stays
in the CPU's L2 cache. When a block is done its scores are final, and only the slots that
reach the running k-th best score (a min-heap of k values) are kept.

Exactness. Runs come in ascending term order, and a slot holds a term once, so each slot
receives the exact float64 products of its terms in ascending term order, starting from
0.0: the same additions, in the same order, as the numpy path (`_scoring._exhaustive`).
Scores are bit-identical. The kept slots are every eligible slot whose score is at least
the final k-th best (ties included), so `select_top` picks exactly what the numpy path
picks. Big queries are split by slot range over a few threads (the kernel releases the
GIL); each part keeps its own heap, and the union of the parts' survivors still holds
every slot that can rank or tie.

Which path runs is decided once per process: ``CHROMA_SPARSE_EF_KERNEL`` = ``auto``
(default: compiled when numba imports, else numpy), ``numba`` (required: a clear error
naming the install command when numba is missing) or ``numpy``. `describe` says which
path runs and why, in one line. The first search in a fresh environment compiles the
kernel (a few seconds; numba caches the result on disk, so later processes load it in
under a second); `warm_up` starts that compile in the background. A fork waits for a
compile in progress, and a forked child starts its own threads.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from .._exceptions import ConfigurationError
from ._segments import Segment

__all__ = [
    "BLOCK_SLOTS",
    "KERNEL_ENV_VAR",
    "KernelChoice",
    "describe",
    "kernel_top",
    "pinned",
    "select_kernel",
    "warm_up",
]

_log = logging.getLogger("chroma_sparse_ef.hybrid")

#: Environment variable that overrides the choice (``auto``, ``numba`` or ``numpy``).
KERNEL_ENV_VAR = "CHROMA_SPARSE_EF_KERNEL"
#: Slots per block: a 256 KiB float64 buffer plus its 32 KiB match marks, inside a
#: core's L2 cache. Measured on the synthetic 1M corpus (bench/_synthetic.py, 30-term
#: queries): 8,192, 32,768 and 131,072 were within 5% of each other; 1M slots in one
#: block (the whole score array, 8 MiB) was slower.
BLOCK_SLOTS = 32_768
#: Queries reading at least this many postings are split over threads by slot range. A
#: part's fixed cost (a thread hand-off and a binary search per run) is ~0.1 ms, and below
#: ~1 ms of work a second thread does not pay; 2M postings is ~2 ms on one core.
PARALLEL_MIN_POSTINGS = 2_000_000
#: Threads per query, and in the shared pool: the cores this process may run on (its CPU
#: affinity, where the OS has one), at most 4 (a 30-term query at 1M records reads ~72
#: MB of postings; past a few cores memory bandwidth, not cores, is the limit). Read
#: once: ``os.cpu_count`` costs ~20 us per call.
THREADS = min(
    4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
)

_INSTALL = "pip install 'chroma-sparse-ef[fast]'"

KernelChoice = Literal["auto", "numba", "numpy"]

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
_Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class _State:
    """The process's decision: the compiled function (None for numpy) and why."""

    kernel: Callable[..., tuple[_I64, _F64]] | None
    reason: str


_state: _State | None = None
_state_lock = threading.Lock()
_decide_lock = threading.Lock()
#: Decisions already taken, by choice: the environment and numba do not change within a
#: process (tests that simulate a missing numba clear this).
_decided: dict[str, _State] = {}
_pool: ThreadPoolExecutor | None = None


def select_kernel(prefer: KernelChoice | None = None) -> str:
    """Decide (again) which path scores queries, and return the one-line reason.

    Args:
        prefer: ``auto``, ``numba`` or ``numpy``; None reads `KERNEL_ENV_VAR`
            (default ``auto``).

    Raises:
        ConfigurationError: An unknown choice, or ``numba`` when numba is missing or
            cannot run here.
    """
    global _state
    choice = prefer if prefer is not None else os.environ.get(KERNEL_ENV_VAR, "auto")
    if choice not in ("auto", "numba", "numpy"):
        raise ConfigurationError(
            f"{KERNEL_ENV_VAR} must be 'auto', 'numba' or 'numpy', got {choice!r}"
        )
    with _state_lock:
        known = _decided.get(choice)
        if known is not None:
            _state = known
            return known.reason
        if choice == "numpy":
            _state = _State(None, f"sparse index: numpy path ({KERNEL_ENV_VAR}=numpy)")
        else:
            try:
                kernel, version = _compile()
            except Exception as exc:
                _state = _State(None, _fallback_reason(choice, exc))
            else:
                _state = _State(kernel, f"sparse index: compiled kernel (numba {version})")
        _decided[choice] = state = _state
    _log.info("%s", state.reason)
    return state.reason


def _fallback_reason(choice: str, exc: Exception) -> str:
    """Why numpy answers after ``_compile`` raised ``exc``; raises when numba was required.

    numba missing is told apart from numba present but unable to work here (it refuses
    the installed numpy, a broken llvmlite, a damaged cache, NUMBA_DISABLE_JIT): for the
    latter, reinstalling the extra would not help.
    """
    missing = isinstance(exc, ModuleNotFoundError) and exc.name in ("numba", "llvmlite")
    if missing:
        if choice == "numba":
            raise ConfigurationError(
                f"{KERNEL_ENV_VAR}=numba but numba is not installed; install it with: {_INSTALL}"
            ) from None
        return (
            f"sparse index: numpy path (numba is not installed; {_INSTALL} for the compiled kernel)"
        )
    # Only the message's first line: numba's typing errors run long.
    lines = str(exc).strip().splitlines()
    why = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    if choice == "numba":
        raise ConfigurationError(
            f"{KERNEL_ENV_VAR}=numba but the compiled kernel cannot run: {why}"
        ) from exc
    return f"sparse index: numpy path (numba cannot run: {why})"


def _current() -> _State:
    state = _state
    if state is None:
        with _decide_lock:  # the warm-up thread and a first search decide once
            if _state is None:
                select_kernel()
        state = _state
        assert state is not None
    return state


@contextlib.contextmanager
def pinned(prefer: KernelChoice) -> Iterator[str]:
    """Score with ``prefer`` inside the block, then restore the previous decision.

    For tests and benchmarks that compare the paths in one process. Yields the reason.
    """
    global _state
    saved = _state
    try:
        yield select_kernel(prefer)
    finally:
        with _state_lock:
            _state = saved


def describe() -> str:
    """One line: which path scores sparse queries in this process, and why."""
    return _current().reason


def warm_up() -> None:
    """Decide and compile in a background thread, so the first search does not wait."""
    if _state is None:
        threading.Thread(target=_warm, name="chroma-sparse-ef-kernel", daemon=True).start()


def _warm() -> None:
    # A bad KERNEL_ENV_VAR is reported by the first search, which decides again.
    with contextlib.suppress(ConfigurationError):
        _current()


def kernel_top(
    segments: Sequence[Segment],
    eligible: _Bool,
    q_terms: _U32,
    q_weights: _F64,
    limit: int,
    positive: bool,
) -> tuple[_I64, _F64] | None:
    """Every eligible slot that may rank in the top ``limit``, with its exact score.

    Returns None when the compiled kernel is not in use (the caller scores with numpy).
    Otherwise returns slots (unordered) and their scores, bit-identical to the numpy
    path's, including every slot tied with the k-th best; `select_top` makes the final
    pick.

    Args:
        segments: The index's segments (disjoint slot sets).
        eligible: Per slot, alive and allowed.
        q_terms: Sorted distinct query terms.
        q_weights: Their (float32-exact) weights.
        limit: k, at least 1.
        positive: Every weight in the index and the query is positive, so a slot matched
            iff its score is positive (no match marks needed).
    """
    kernel = _current().kernel
    if kernel is None:
        return None
    parts: list[tuple[Segment, _I64, _I64, _F64, int, int]] = []
    total = 0
    for seg in segments:
        runs = _runs(seg, q_terms, q_weights)
        if runs is None:
            continue
        starts, ends, weights = runs
        lo = int(seg.slots[starts].min())
        hi = int(seg.slots[ends - 1].max()) + 1
        total += int((ends - starts).sum())
        parts.append((seg, starts, ends, weights, lo, hi))
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    threads = THREADS
    if total < PARALLEL_MIN_POSTINGS or threads < 2:
        calls = parts
    else:
        calls = []
        for seg, starts, ends, weights, lo, hi in parts:
            share = int((ends - starts).sum()) / total
            n_split = max(1, min(threads, round(share * threads)))
            cuts = np.linspace(lo, hi, n_split + 1).astype(np.int64).tolist()
            calls.extend((seg, starts, ends, weights, a, b) for a, b in itertools.pairwise(cuts))

    def run(call: tuple[Segment, _I64, _I64, _F64, int, int]) -> tuple[_I64, _F64]:
        seg, starts, ends, weights, lo, hi = call
        # The heap and the output are sized by k, and a part never keeps more than its
        # slots: a limit of 2**62 must not allocate (at least 1: the kernel reads heap[0]).
        k = max(1, min(limit, hi - lo))
        return kernel(
            seg.slots, seg.weights, starts, ends, weights, eligible,
            lo, hi, k, positive, BLOCK_SLOTS,
        )  # fmt: skip

    results = [run(calls[0])] if len(calls) == 1 else list(_thread_pool().map(run, calls))
    return (
        np.concatenate([r[0] for r in results]),
        np.concatenate([r[1] for r in results]),
    )


def _runs(seg: Segment, q_terms: _U32, q_weights: _F64) -> tuple[_I64, _I64, _F64] | None:
    """The query's postings runs in ``seg``, ascending by term: starts, ends, weights.

    A tiered term is several runs (one per impact tier), each ascending by slot; a slot
    is in at most one of them, so the order among a term's runs does not matter.
    """
    pos, found = seg.find(q_terms)
    if not bool(found.any()):
        return None
    rows = seg.bounds[pos[found]].astype(np.int64, copy=False)
    starts = rows[:, :-1].ravel()
    ends = rows[:, 1:].ravel()
    weights = np.repeat(q_weights[found], rows.shape[1] - 1)
    keep = ends > starts
    return starts[keep], ends[keep], weights[keep]


def _before_fork() -> None:
    # A decision in progress holds these locks (and numba its compiler lock) for seconds:
    # the fork waits for it, so the child never inherits a lock no thread of its will
    # ever release.
    _decide_lock.acquire()
    _state_lock.acquire()


def _after_fork_in_parent() -> None:
    _state_lock.release()
    _decide_lock.release()


def _after_fork_in_child() -> None:
    global _pool
    # The parent's pool threads do not exist here, and its idle count would make every
    # hand-off wait forever: the child starts its own pool.
    _pool = None
    _state_lock.release()
    _decide_lock.release()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _thread_pool() -> ThreadPoolExecutor:
    global _pool
    with _state_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=THREADS,
                thread_name_prefix="chroma-sparse-ef-score",
            )
        return _pool


def _compile() -> tuple[Callable[..., tuple[_I64, _F64]], str]:
    """Import numba and compile the kernel now (raises ImportError without numba).

    Compiling here, on a two-record segment with the argument types searches use, means
    a failure shows at decision time (and `warm_up` really does the work early).
    """
    # import_module consults sys.modules, so a numba that cannot be imported is seen even
    # when this module was imported before.
    module = importlib.import_module(f"{__package__}._kernel_numba")
    if not module.jit_enabled():
        raise RuntimeError("NUMBA_DISABLE_JIT is set: the kernel would run as Python")
    kernel: Callable[..., tuple[_I64, _F64]] = module.block_top_k
    slots = np.array([0, 1], dtype=np.int32)
    weights = np.array([1.0, 2.0], dtype=np.float32)
    runs = np.array([0], dtype=np.int64), np.array([2], dtype=np.int64)
    got = kernel(
        slots, weights, *runs, np.ones(1), np.ones(2, np.bool_), 0, 2, 1, True, BLOCK_SLOTS
    )
    if got[0].tolist() != [1] or got[1].tolist() != [2.0]:
        raise RuntimeError(f"the compiled kernel gave {got} on a known input")
    return kernel, module.numba_version()

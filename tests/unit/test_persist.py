"""When the sparse cache is saved (the debounce policy), and what a saved one reads back as."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chroma_sparse_ef.hybrid._index import SparseIndex
from chroma_sparse_ef.hybrid._persist import CacheState, SnapshotStore, freeze, vector_hash
from chroma_sparse_ef.hybrid._snapshot import layout_digest

CID = "5f1c0c3e-1111-4c5e-9a57-0c3f1f0b6a11"
LAYOUT = layout_digest({"stored": "x", "sparse_key": "sparse", "bm25": False})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(watermark: int = 7) -> CacheState:
    ids = ["a", "b", "ç-ü", "z"]
    index = SparseIndex.build(
        ids, [[1, 4], [2], [4, 9], [3]], [[0.5, 1.0], [2.0], [1.5, 0.25], [1.0]]
    )
    known: dict[str, tuple[str, int] | None] = {
        "a": ("0123456789abcdef", vector_hash("spv1:a")),
        "b": ("fedcba9876543210", vector_hash("spv1:b")),
        "ç-ü": ("00000000ffffffff", vector_hash("spv1:c")),
        "z": ("1111111111111111", vector_hash("spv1:z")),
        "no-doc": None,
        "refused": ("!aaaaaaaaaaaaaaaa", 0),
    }
    return CacheState(freeze(index), known, {"refused": "InvalidRequestError: too long"}, watermark)


def make(tmp_path: Path, clock: Clock, **kw: float) -> SnapshotStore:
    return SnapshotStore(
        tmp_path / "snap" / "c.sparse-index",
        CID,
        LAYOUT,
        clock=clock,
        min_changes=int(kw.get("min_changes", 10)),
        min_interval=kw.get("min_interval", 30.0),
    )


def test_a_saved_cache_reads_back_with_the_same_index_fingerprints_and_pending(
    tmp_path: Path,
) -> None:
    """Fingerprints of every kind, non-ASCII ids and pending reasons survive a round trip."""
    store = make(tmp_path, Clock())
    saved = state()
    store._write(saved)

    loaded = store.load()

    assert loaded is not None
    assert loaded.known == saved.known
    assert loaded.pending == saved.pending
    assert loaded.watermark == saved.watermark
    q = (np.array([1, 2, 4], dtype=np.int64), np.array([1.0, 1.0, 1.0]))
    original = SparseIndex.from_state(saved.index.export_state())
    assert loaded.index.search(*q, 10) == original.search(*q, 10)


def test_a_full_read_is_saved_at_once_then_writes_wait_for_both_thresholds(
    tmp_path: Path,
) -> None:
    """After the full read's snapshot, another needs min_changes records and min_interval s."""
    clock = Clock()
    store = make(tmp_path, clock, min_changes=10, min_interval=30.0)
    captured: list[int] = []

    def capture() -> CacheState:
        captured.append(1)
        return state(watermark=len(captured))

    assert not store.maybe_save(capture)  # nothing changed yet
    store.saved_fresh()
    assert store.maybe_save(capture)
    store.wait()
    assert store.writes == 1

    store.changed(9)
    clock.now += 60
    assert not store.maybe_save(capture)  # too few changes
    store.changed(1)
    clock.now -= 45  # only 15 s after the last write
    assert not store.maybe_save(capture)
    clock.now += 15
    assert store.maybe_save(capture)
    store.wait()
    assert store.writes == 2
    loaded = store.load()
    assert loaded is not None
    assert loaded.watermark == 2


def test_close_saves_what_changed_since_the_last_snapshot_and_nothing_otherwise(
    tmp_path: Path,
) -> None:
    """close() writes below the thresholds too, but not when nothing changed."""
    store = make(tmp_path, Clock(), min_changes=1000)
    store.close(lambda: state(3))
    assert store.writes == 0
    assert store.load() is None

    store.changed(1)
    store.close(lambda: state(4))
    assert store.writes == 1
    loaded = store.load()
    assert loaded is not None
    assert loaded.watermark == 4


def test_a_stale_cache_is_not_saved(tmp_path: Path) -> None:
    """When the cache cannot say which watermark it reflects (capture gives None), no file."""
    store = make(tmp_path, Clock())
    store.saved_fresh()
    assert not store.maybe_save(lambda: None)
    store.close(lambda: None)
    assert not store.path.exists()


def test_a_failed_write_warns_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unwritable folder costs the snapshot, not the search that triggered it."""
    store = make(tmp_path, Clock())
    store.path.parent.parent.mkdir(parents=True, exist_ok=True)
    store.path.parent.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, logger="chroma_sparse_ef.hybrid._persist"):
        for _ in range(2):
            store.changed(1)
            store.close(lambda: state())
    assert store.writes == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "could not write" in warnings[0].getMessage()


def test_a_snapshot_for_another_collection_or_layout_is_not_loaded(tmp_path: Path) -> None:
    """Same file, other collection id or other layout digest: None."""
    store = make(tmp_path, Clock())
    store._write(state())
    assert store.load() is not None
    assert SnapshotStore(store.path, "another-id", LAYOUT).load() is None
    assert SnapshotStore(store.path, CID, layout_digest({"other": 1})).load() is None


def test_vector_hash_is_the_same_in_processes_with_different_hash_seeds() -> None:
    """Saved fingerprints mean the same in the next process (hash(str) would not)."""
    code = (
        "from chroma_sparse_ef.hybrid._persist import vector_hash;"
        "print(vector_hash('spv1:ApYAAABRAE8AVwD2AKcA'), hash('spv1:ApYAAABRAE8AVwD2AKcA'))"
    )
    root = Path(__file__).resolve().parents[2]
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(root)},
        ).stdout.split()
        for seed in ("1", "2")
    ]
    assert outs[0][0] == outs[1][0]
    assert outs[0][1] != outs[1][1]  # the builtin hash really differs between them
    assert int(outs[0][0]) == vector_hash("spv1:ApYAAABRAE8AVwD2AKcA")
    assert vector_hash("spv1:ApYAAABRAE8AVwD2AKcA") != vector_hash("spv1:ApYAAABRAE8AVwD2AKcB")


def test_a_temporary_file_left_by_a_killed_writer_is_removed_at_the_next_write(
    tmp_path: Path,
) -> None:
    """A dead writer's partial file goes; a live process's (maybe writing now) stays."""
    store = make(tmp_path, Clock())
    store.path.parent.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    orphan = store.path.with_name(f".{store.path.name}.{dead_pid}.0badf00d.tmp")
    orphan.write_bytes(b"half a snapshot")
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        busy = store.path.with_name(f".{store.path.name}.{live.pid}.0badf00d.tmp")
        busy.write_bytes(b"being written")
        store._write(state())
        assert not orphan.exists()
        assert busy.exists()
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait()
    assert store.load() is not None

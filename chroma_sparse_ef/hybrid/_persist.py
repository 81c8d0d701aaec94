"""When the sparse cache of a PersistentClient collection is saved, and what is saved.

A new process used to rebuild the sparse index from every record's stored vector (about
a minute at 1M records). With a snapshot (`_snapshot`: one checksummed file beside
Chroma's data) it reads the index back, then catches up from the snapshot's watermark on
the writes made since (`_coherence`), so opening costs the file read plus time
proportional to those writes.

What is saved: the index, what the cache knows of every record (`known`: its fingerprint)
and the pending records, all at one watermark (the cache reflects every write up to it).
The header carries the collection id and a digest of the layout: the layout stored in the
collection's metadata (the sparse function's name and config), the sparse key, the BM25
flag and the fingerprint scheme. Any mismatch
or damage makes `SnapshotStore.load` return None and the cache is read from Chroma, which
stays the only truth.

When (the policy; numbers below):

1. after a full read of the collection (the first search of a process without a usable
   snapshot, or ``refresh()``);
2. after our own writes and catch-ups on other writers, once at least
   `SNAPSHOT_MIN_CHANGES` records changed since the last snapshot *and* at least
   `SNAPSHOT_MIN_INTERVAL` seconds passed since this process last wrote one, so a
   write-heavy process does not rewrite a large file per write;
3. on ``close()``, if anything changed since the last snapshot.

(1) and (2) write in a background thread from a frozen copy of the state (the index's
arrays are immutable and shared, `known` is copied under the cache lock), so searches and
writes go on; at most one write is in flight. (3) waits for it. The thread is not a daemon:
a short-lived process (a CLI call) that read the collection leaves its snapshot behind
on exit. A failed write (read-only folder, full disk) is logged once and never raised.
A killed writer leaves its temporary file (never the snapshot itself: the rename is
atomic); the next write removes it.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._index import IndexState, SparseIndex
from ._snapshot import layout_digest, load_snapshot, snapshot_path, write_snapshot

__all__ = [
    "SNAPSHOT_MIN_CHANGES",
    "SNAPSHOT_MIN_INTERVAL",
    "CacheState",
    "SnapshotStore",
    "vector_hash",
]

logger = logging.getLogger(__name__)

#: Changed records since the last snapshot before another is written. Catching up on
#: 1,000 records costs one ``collection.get`` of them (~0.1 s, bench/bench_hybrid.py),
#: small beside opening; fewer would rewrite the file for changes that cheap to replay.
SNAPSHOT_MIN_CHANGES = 1_000
#: Seconds between two snapshots written by one process after writes. A 1M-record
#: snapshot is ~1.2 GB, ~3 s of one core to hash and write: at most ~10% of a core for a
#: process that writes without pause.
SNAPSHOT_MIN_INTERVAL = 30.0
#: Bump when the fingerprint scheme or the saved `known` layout changes (part of the
#: layout digest, so older snapshots are then ignored).
_KNOWN_FORMAT = 1
_DIGEST_CHARS = 16  # `_stored.document_hash`: 8 bytes as hex
_NONE, _EMBEDDED, _UNEMBEDDED = 0, 1, 2
_UNEMBEDDED_PREFIX = "!"

Fingerprint = tuple[str, int] | None


def vector_hash(vector: str) -> int:
    """A stable hash of an encoded sparse vector (the same in every process).

    Python's ``hash(str)`` changes per process (PYTHONHASHSEED), so it cannot be saved.
    CRC-32 and the length: ~2 µs for a 150-term vector (blake2b takes ~7 µs, which at 1M
    records would add 7 s to a full read); this detects a changed vector, it is no
    security boundary (the document hash sits beside it).
    """
    data = vector.encode("utf-8", "surrogatepass")
    return (len(data) << 32) | zlib.crc32(data)


@dataclass(frozen=True, slots=True)
class CacheState:
    """The sparse cache at one watermark: what a snapshot holds.

    Attributes:
        index: The index (its arrays are shared, never copied).
        known: Fingerprint per record id (`_coherence.fingerprint`).
        pending: Reason per record set aside.
        watermark: Every write up to it is in the state.
    """

    index: SparseIndex
    known: dict[str, Fingerprint]
    pending: dict[str, str]
    watermark: int


class _FrozenIndex(SparseIndex):
    """An index state exported under the cache lock, for `write_snapshot` to store.

    Building a real index from it would index every id again (~0.3 s at 1M) for nothing.
    """

    def __init__(self, state: IndexState) -> None:
        super().__init__()
        self._state = state

    def export_state(self) -> IndexState:
        return self._state


def freeze(index: SparseIndex) -> SparseIndex:
    """The index as it is now; later writes to ``index`` do not change what is saved."""
    return _FrozenIndex(index.export_state())


class SnapshotStore:
    """Loads and saves one collection's snapshot, and decides when to save.

    Thread-safe for `changed`, `maybe_save` and `close` called under the cache lock.

    Args:
        path: The snapshot file.
        collection_id: The collection's id (checked on load).
        layout: The layout digest (checked on load).
        clock: Monotonic seconds (injected by tests).
        min_changes: See `SNAPSHOT_MIN_CHANGES`.
        min_interval: See `SNAPSHOT_MIN_INTERVAL`.
    """

    def __init__(
        self,
        path: Path,
        collection_id: str,
        layout: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_changes: int = SNAPSHOT_MIN_CHANGES,
        min_interval: float = SNAPSHOT_MIN_INTERVAL,
    ) -> None:
        self.path = path
        self.collection_id = collection_id
        self.layout = layout
        self._clock = clock
        self._min_changes = min_changes
        self._min_interval = min_interval
        self._changes = 0
        self._dirty = False
        self._last_write: float | None = None
        self._thread: threading.Thread | None = None
        self._warned = False
        #: Snapshots written by this store (for tests and benchmarks).
        self.writes = 0
        #: Seconds the last successful write took (for benchmarks).
        self.last_write_seconds: float | None = None

    @classmethod
    def for_collection(
        cls,
        persist_directory: str,
        collection_id: str,
        *,
        stored_layout: object,
        sparse_key: str,
        bm25: bool,
    ) -> SnapshotStore | None:
        """The store of a PersistentClient collection, or None if its layout has no digest.

        Args:
            persist_directory: The PersistentClient's folder.
            collection_id: The collection's id.
            stored_layout: The layout stored in the collection's metadata
                (`_stored.CONFIG_METADATA_KEY`): the sparse function's registered name
                and config, i.e. which model made the stored vectors. The stored one,
                not the live function's, so a handle given an equivalent function (say,
                another base URL) still uses the snapshot.
            sparse_key: The record-metadata key of the vectors.
            bm25: Whether the sparse leg applies BM25 IDF.
        """
        try:
            layout = layout_digest(
                {
                    "stored": stored_layout,
                    "sparse_key": sparse_key,
                    "bm25": bool(bm25),
                    "known_format": _KNOWN_FORMAT,
                }
            )
        except (TypeError, ValueError) as exc:  # not JSON: no snapshots, not an error
            logger.debug("no snapshot for collection %s: %r", collection_id, exc)
            return None
        return cls(snapshot_path(persist_directory, collection_id), collection_id, layout)

    # ------------------------------------------------------------------ load

    def load(self) -> CacheState | None:
        """The saved state, or None if missing, damaged, foreign or of another layout."""
        try:
            return self._load()
        except Exception as exc:  # reading Chroma is always right; a surprise here is not
            logger.warning("ignored the sparse index snapshot %s: %r", self.path, exc)
            return None

    def _load(self) -> CacheState | None:
        loaded = load_snapshot(self.path, collection_id=self.collection_id, layout=self.layout)
        if loaded is None or not isinstance(loaded.watermark, int):
            return None
        try:
            known = _decode_known(loaded.extras, loaded.blobs)
            pending = json.loads(loaded.blobs["pending"])
        except (KeyError, ValueError, TypeError, UnicodeDecodeError):
            return None
        if known is None or not _is_pending(pending, known):
            return None
        embedded = int(np.count_nonzero(loaded.extras["known.kinds"] == _EMBEDDED))
        if embedded < len(loaded.index):
            return None  # the index holds a record `known` does not say is embedded
        return CacheState(loaded.index, known, pending, loaded.watermark)

    # ------------------------------------------------------------------ save

    def changed(self, records: int) -> None:
        """Count records changed in the cache since the last snapshot."""
        if records > 0:
            self._changes += records
            self._dirty = True

    def saved_fresh(self) -> None:
        """The state was just read from Chroma in full: save it (policy rule 1)."""
        self._dirty = True
        self._changes = max(self._changes, self._min_changes)
        self._last_write = None

    def due(self) -> bool:
        """Whether the policy asks for a snapshot now."""
        if not self._dirty or self._changes < self._min_changes:
            return False
        if self._thread is not None and self._thread.is_alive():
            return False
        return self._last_write is None or self._clock() - self._last_write >= self._min_interval

    def maybe_save(self, capture: Callable[[], CacheState | None]) -> bool:
        """Save in the background if due; ``capture`` runs now, under the caller's lock.

        Returns:
            Whether a write was started.
        """
        if not self.due():
            return False
        state = capture()
        if state is None:
            return False
        self._start(state)
        return True

    def close(self, capture: Callable[[], CacheState | None]) -> None:
        """Wait for a write in flight, then save what changed since (policy rule 3)."""
        self.wait()
        if self._dirty:
            state = capture()
            if state is not None:
                self._reset()
                self._write(state)

    def wait(self) -> None:
        """Wait for a background write to finish."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def _start(self, state: CacheState) -> None:
        self._reset()
        self._thread = threading.Thread(
            target=self._write, args=(state,), name="chroma-sparse-ef-snapshot", daemon=False
        )
        self._thread.start()

    def _reset(self) -> None:
        self._dirty = False
        self._changes = 0
        self._last_write = self._clock()

    def _write(self, state: CacheState) -> None:
        started = time.perf_counter()
        self._remove_orphans()
        try:
            extras, blobs = _encode_known(state.known)
            blobs["pending"] = json.dumps(state.pending, sort_keys=True).encode()
            write_snapshot(
                self.path,
                state.index,
                collection_id=self.collection_id,
                watermark=state.watermark,
                layout=self.layout,
                extras=extras,
                blobs=blobs,
            )
        except (OSError, ValueError) as exc:
            # The snapshot only saves time: the next process reads Chroma instead.
            if not self._warned:
                self._warned = True
                logger.warning("could not write the sparse index snapshot %s: %s", self.path, exc)
            return
        self.writes += 1
        self.last_write_seconds = time.perf_counter() - started
        logger.info(
            "wrote sparse index snapshot %s (%d records, watermark %d) in %.2f s",
            self.path,
            len(state.known),
            state.watermark,
            time.perf_counter() - started,
        )

    def _remove_orphans(self) -> None:
        """Delete temporary files left by writers that died mid-write (a kill, a crash).

        `write_snapshot` names them ``.<file name>.<pid>.<random>.tmp``; each can be as
        large as the snapshot, so a killed writer would otherwise leak ~1 GB at 1M
        records. A file whose pid is alive (maybe another writer now) is left alone.
        """
        folder = self.path.parent
        for tmp in folder.glob(f".{self.path.name}.*.tmp"):
            pid_text = tmp.name[len(self.path.name) + 2 :].split(".", 1)[0]
            if not pid_text.isdigit() or _alive(int(pid_text)):
                continue
            try:
                tmp.unlink()
            except OSError:
                continue
            logger.info("removed %s, left by a snapshot writer that died", tmp)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or unknowable: keep the file
    return True


def _encode_known(
    known: Mapping[str, Fingerprint],
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, bytes]]:
    n = len(known)
    kinds = np.empty(n, dtype=np.uint8)
    vectors = np.zeros(n, dtype=np.int64)
    digests: list[str] = []
    none_digest = "0" * _DIGEST_CHARS
    for i, print_ in enumerate(known.values()):
        if print_ is None:
            kinds[i] = _NONE
            digests.append(none_digest)
        elif print_[0].startswith(_UNEMBEDDED_PREFIX):
            kinds[i] = _UNEMBEDDED
            digests.append(print_[0][1:])
        else:
            kinds[i] = _EMBEDDED
            digests.append(print_[0])
            vectors[i] = print_[1]
    text = "".join(digests)
    if len(text) != n * _DIGEST_CHARS or not text.isascii():
        raise ValueError("a fingerprint holds a document hash of another form")
    encoded = [rid.encode("utf-8", "surrogatepass") for rid in known]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, n), out=offsets[1:])
    extras: dict[str, npt.NDArray[Any]] = {
        "known.kinds": kinds,
        "known.vectors": vectors,
        "known.id_offsets": offsets,
    }
    blobs = {"known.ids": b"".join(encoded), "known.digests": text.encode("ascii")}
    return extras, blobs


def _decode_known(
    extras: Mapping[str, npt.NDArray[Any]], blobs: Mapping[str, bytes]
) -> dict[str, Fingerprint] | None:
    kinds, vectors, offsets = (
        extras["known.kinds"],
        extras["known.vectors"],
        extras["known.id_offsets"],
    )
    raw_ids, raw_digests = blobs["known.ids"], blobs["known.digests"]
    n = kinds.shape[0]
    if (
        kinds.dtype != np.uint8
        or vectors.dtype != np.int64
        or offsets.dtype != np.int64
        or kinds.shape != (n,)
        or vectors.shape != (n,)
        or offsets.shape != (n + 1,)
        or len(raw_digests) != n * _DIGEST_CHARS
        or int(offsets[0]) != 0
        or int(offsets[-1]) != len(raw_ids)
        or bool(np.any(np.diff(offsets) < 0))
        or bool(np.any(kinds > _UNEMBEDDED))
    ):
        return None
    bounds = offsets.tolist()
    if raw_ids.isascii():
        # One decode, then slices: byte offsets are character offsets in ASCII.
        text = raw_ids.decode("ascii")
        ids = [text[a:b] for a, b in itertools.pairwise(bounds)]
    else:
        ids = [raw_ids[a:b].decode("utf-8", "surrogatepass") for a, b in itertools.pairwise(bounds)]
    # Built in C where possible (a per-record Python loop costs ~1.5 s at 1M records),
    # and without the cyclic collector, which would rescan the millions of new tuples
    # many times over (~half the time otherwise): tuples of str and int hold no cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        digests = np.frombuffer(raw_digests, dtype=f"S{_DIGEST_CHARS}").astype(str).tolist()
        prints: list[Fingerprint] = list(zip(digests, vectors.tolist(), strict=True))
        for i in np.flatnonzero(kinds != _EMBEDDED).tolist():
            prints[i] = None if kinds[i] == _NONE else (_UNEMBEDDED_PREFIX + digests[i], 0)
        known = dict(zip(ids, prints, strict=True))
    finally:
        if was_enabled:
            gc.enable()
    return known if len(known) == n else None


def _is_pending(pending: object, known: Mapping[str, Fingerprint]) -> bool:
    if not isinstance(pending, dict):
        return False
    return all(
        isinstance(rid, str) and isinstance(why, str) and rid in known
        for rid, why in pending.items()
    )

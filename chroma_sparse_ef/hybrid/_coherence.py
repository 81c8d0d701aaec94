"""What the sparse cache knows of an embedded collection, and how it catches up.

Chroma is the truth; the `SparseIndex` is a cache of the sparse vectors stored in the
records' metadata (`_stored`). Alongside it, ``known`` maps every record id to a
*fingerprint* of what the cache holds for it (`fingerprint`): ``(document hash, hash of
the stored vector string)``; ``None`` for a record without a document (no sparse vector,
as on Chroma Cloud); ``("!" + document hash, 0)`` for a record whose document has no
usable vector yet (pending, or about to be embedded).

Loading (`CacheCoherence.load`) pages through ``collection.get`` and builds the index in
one go. Records with a document but no usable vector (written by other code, or a
document changed by other code) are embedded and the vectors written back.

Opening from a snapshot (PersistentClient only, `_persist`): the first search of a
process reads the saved index, ``known`` and pending records back if the file is intact
and was written for this collection and layout, then catches up from the snapshot's
watermark like any other catch-up (below) and retries the pending records, as a full load
would. If the file is unusable, the catch-up cannot be read, or the record count then
disagrees with Chroma's, the cache is read from Chroma in full instead: a snapshot can
only save time, never change a result. The fingerprint uses a stable hash
(`_persist.vector_hash`) so a saved one still means the same in another process.

Writes by other code (the raw collection, another process) must not make search wrong.
What is detected:

1. PersistentClient: the sqlite watermark (`_watch`) moves for every record written by
   anyone; it is read before every search (~10 µs). When it moved, the cache *catches up*:
   it reads which records changed since the last watermark it saw (Chroma's write-ahead
   log, or the records' sequence numbers when the log was purged), fetches just those,
   and applies them, so the cost follows the writes, not the collection's size. Only
   when the changes cannot be read safely does it reload everything.
2. Every client: ``count()`` against the number of records known, before every search,
   when there is no watermark (catches adds and deletes that change the count).
3. Every client, every search: each record a leg returns must match its fingerprint
   (`matches`); a mismatch catches up (or reloads) and runs the search again.
4. EphemeralClient and HttpClient (no watermark): every `HybridCollection` handle on the
   same collection in one process shares one backend (`_local.shared_backend`), so a
   write through any handle updates the one cache every handle searches.

Not detected on EphemeralClient and HttpClient: a write by code that bypasses
`HybridCollection` that changes a document, or adds and deletes records leaving the count
unchanged, when the affected record is in neither leg's candidates of the stale cache;
the sparse leg can then miss a record that should have ranked until `refresh()`.
Metadata filters and returned fields always come from Chroma itself, so they are never
stale.

Pending records. A record written by other code whose document the service refuses (400,
413 for one text) or cannot embed now (unreachable, 5xx after retries) is *set aside*: its
metadata gets the pending marker (`_stored.pending_key`: the document's hash and the
reason), it stays out of the sparse index, and the dense leg and every other record keep
working. Catching up does not retry it while its document is unchanged (that would call
the service again at every search); a full `load` (``refresh()``, or a new process)
retries every pending record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._codec import (
    CorruptSparseVectorError,
    decode_sparse_vector,
    decode_sparse_vectors,
    encode_sparse_vector,
    is_encoded_sparse_vector,
)
from ._index import SparseIndex
from ._ingest import WRITE_CHUNK, embed_or_set_aside
from ._persist import CacheState, SnapshotStore, freeze, vector_hash
from ._stored import doc_hash_key, document_hash, pending_key
from ._watch import SqliteWatermark
from ._writes import chunks

__all__ = ["LOAD_PAGE", "CacheCoherence", "Fingerprint", "PendingRecord", "fingerprint"]

logger = logging.getLogger(__name__)

#: Records per ``collection.get`` page when loading. Measured on 100k records
#: (bench/bench_hybrid.py): pages of 5k-20k cost the same; 10k keeps ~15 MB of strings live.
LOAD_PAGE = 10_000
#: Times a load restarts when the collection changed while it was read (clients without
#: a watermark; with one, the changes made during a load are caught up instead).
_LOAD_ATTEMPTS = 3

Fingerprint = tuple[str, int] | None
_MISSING = object()
#: Prefix of the fingerprint of a record with a document but no usable vector.
_UNEMBEDDED = "!"


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A record the sparse leg cannot rank yet: its document could not be embedded.

    Attributes:
        id: The record id.
        reason: Why, as the embedding error said it (type and message).
    """

    id: str
    reason: str


def fingerprint(
    doc: str | None, meta: Mapping[str, Any] | None, sparse_key: str, hash_key: str
) -> Fingerprint:
    """What the cache should hold for a record, from its document and metadata."""
    if doc is None:
        return None
    digest = document_hash(doc)
    vector = meta.get(sparse_key) if meta else None
    if (
        isinstance(vector, str)
        and meta is not None
        and meta.get(hash_key) == digest
        and is_encoded_sparse_vector(vector)
    ):
        return (digest, vector_hash(vector))
    return (_UNEMBEDDED + digest, 0)


def is_embedded(print_: Fingerprint) -> bool:
    """Whether a fingerprint stands for a record with a usable sparse vector."""
    return print_ is not None and not print_[0].startswith(_UNEMBEDDED)


class CacheCoherence:
    """The sparse cache of one embedded collection and what it knows. Thread-safe.

    Writers and searches take `lock` around anything that reads or changes the cache
    together with Chroma.
    """

    def __init__(
        self,
        collection: Any,
        sparse_function: Any,
        sparse_key: str,
        *,
        max_batch_size: int,
        watermark: SqliteWatermark | None,
        store: SnapshotStore | None = None,
    ) -> None:
        self.collection = collection
        self.sparse_function = sparse_function
        self.sparse_key = sparse_key
        self.hash_key = doc_hash_key(sparse_key)
        self.pending_key = pending_key(sparse_key)
        self.lock = threading.RLock()
        self.index: SparseIndex | None = None
        self.known: dict[str, Fingerprint] = {}
        self._pending: dict[str, str] = {}
        self._max_batch = max_batch_size
        self._watermark = watermark
        self._seen: int | None = None
        self._stale = True
        self._store = store if watermark is not None else None
        #: Where the cache was last built from: "snapshot", "chroma" or None (not yet).
        self.opened_from: str | None = None

    # ------------------------------------------------------------------ what it knows

    def matches(self, rid: str, doc: str | None, meta: Mapping[str, Any] | None) -> bool:
        """Whether a record as Chroma returned it is what the cache holds for it."""
        expected = self.known.get(rid, _MISSING)
        if expected is _MISSING:
            return False
        return expected == fingerprint(doc, meta, self.sparse_key, self.hash_key)

    def pending(self) -> list[PendingRecord]:
        """Records set aside because their document could not be embedded, by id."""
        with self.lock:
            return [PendingRecord(rid, why) for rid, why in sorted(self._pending.items())]

    # ------------------------------------------------------------------ catching up

    def ensure_fresh(self) -> None:
        """Bring the cache up to the collection: build it, catch up, or reload."""
        with self.lock:
            if self.index is None:
                if not self._open_snapshot():
                    self.load()
            elif self._stale:
                self.load()
            elif self._watermark is not None:
                now = self._watermark.read()
                if now != self._seen and not self._catch_up(now):
                    self.load()
            elif self.collection.count() != len(self.known):
                self.load()
            self._maybe_save()

    def suspect(self) -> None:
        """A search saw a record that disagrees with the cache: look again before reusing it.

        With a watermark that moved, the next `ensure_fresh` catches up on the writes
        that explain it; otherwise the cache is reloaded.
        """
        with self.lock:
            watermark = self._watermark
            if (
                watermark is not None
                and not self._stale
                and self.index is not None
                and watermark.read() != self._seen
            ):
                return
            self._stale = True

    def load(self) -> None:
        """(Re)build the cache from the collection; embed records without a usable vector.

        Pending records are retried here (a refresh).
        """
        with self.lock:
            for _ in range(_LOAD_ATTEMPTS):
                if self._load_once():
                    self.opened_from = "chroma"
                    if self._store is not None:
                        self._store.saved_fresh()
                    return
            # Still changing: keep what was read and let the next search try again;
            # per-record checks guard the searches in between.
            self._stale = True

    def _load_once(self) -> bool:
        before = None if self._watermark is None else self._watermark.read()
        index, known, redo = self._read_collection()
        self.index, self.known, self._pending = index, known, {}
        sent = self._embed_back(redo)
        if self._watermark is None:
            return self._count_agrees()
        now = self._watermark.read()
        if before is not None and now - before == sent:
            self._seen, self._stale = now, False
            return True
        # Others wrote while we read: what we read is at least as new as `before`, so
        # catching up from there applies exactly what we may have missed.
        self._seen, self._stale = before, False
        return self._catch_up(now)

    def _read_collection(self) -> tuple[SparseIndex, dict[str, Fingerprint], list[tuple[str, str]]]:
        """Every record's stored vector, decoded into a fresh index; what needs embedding."""
        ids: list[str] = []
        docs: list[str] = []
        vectors: list[str] = []
        prints: list[tuple[str, int]] = []
        known: dict[str, Fingerprint] = {}
        redo: list[tuple[str, str]] = []
        for offset in range(0, 2**62, LOAD_PAGE):
            page = self.collection.get(
                include=["metadatas", "documents"], limit=LOAD_PAGE, offset=offset
            )
            page_ids = page["ids"]
            for rid, doc, meta in zip(page_ids, page["documents"], page["metadatas"], strict=True):
                print_ = fingerprint(doc, meta, self.sparse_key, self.hash_key)
                known[rid] = print_
                if print_ is None:
                    continue
                if is_embedded(print_):
                    ids.append(rid)
                    docs.append(doc)
                    vectors.append(meta[self.sparse_key])
                    prints.append(print_)
                else:
                    redo.append((rid, doc))
            if len(page_ids) < LOAD_PAGE:
                break
        while True:
            try:
                indptr, terms, weights = decode_sparse_vectors(vectors)
                break
            except CorruptSparseVectorError as exc:
                # A malformed stored vector: embed that record again like a missing one.
                bad = exc.record or 0
                rid, doc = ids.pop(bad), docs.pop(bad)
                del vectors[bad], prints[bad]
                known[rid] = (_UNEMBEDDED + document_hash(doc), 0)
                redo.append((rid, doc))
        return SparseIndex.from_csr(ids, indptr, terms, weights), known, redo

    def _catch_up(self, now: int) -> bool:
        """Apply the writes between the last watermark seen and ``now``; False: reload."""
        if self._watermark is None or self._seen is None or self.index is None:
            return False
        changes = self._watermark.changes(self._seen, now)
        if changes is None:
            return False
        redo: list[tuple[str, str]] = []
        gone: list[str] = list(changes.deleted or ())
        upserted = list(changes.upserted)
        for start, end in chunks(len(upserted), LOAD_PAGE):
            wanted = upserted[start:end]
            page = self.collection.get(ids=wanted, include=["metadatas", "documents"])
            redo += self._apply(page["ids"], page["documents"], page["metadatas"])
            gone += sorted(set(wanted) - set(page["ids"]))
        self._forget(gone)
        sent = self._embed_back(redo)
        if changes.deleted is None:
            # The log was purged: deletes show only as ids no longer present. (Not a
            # count comparison: a concurrent writer moves the count past `now`.)
            present = self._watermark.present_ids()
            if present is None:
                return False
            vanished = [rid for rid in self.known if rid not in present]
            self._forget(vanished)
            gone += vanished
        if self._store is not None:
            self._store.changed(len(upserted) + len(gone))
        after = self._watermark.read()
        self._seen = after if after - now == sent else now
        logger.debug("caught up on %d changed and %d deleted records", len(upserted), len(gone))
        return True

    def _apply(
        self,
        ids: Sequence[str],
        docs: Sequence[str | None],
        metas: Sequence[Mapping[str, Any] | None],
    ) -> list[tuple[str, str]]:
        """Put records as Chroma holds them into the cache; those needing embedding back."""
        assert self.index is not None
        redo: list[tuple[str, str]] = []
        up_ids: list[str] = []
        up_terms: list[Any] = []
        up_weights: list[Any] = []
        drop: list[str] = []
        for rid, doc, meta in zip(ids, docs, metas, strict=True):
            if doc is None:
                drop.append(rid)  # no document, no sparse vector
                self.known[rid] = None
                self._pending.pop(rid, None)
                continue
            print_ = fingerprint(doc, meta, self.sparse_key, self.hash_key)
            vector = self._decoded(meta) if is_embedded(print_) else None
            if vector is not None:
                up_ids.append(rid)
                up_terms.append(vector[0])
                up_weights.append(vector[1])
                self.known[rid] = print_
                self._pending.pop(rid, None)
                continue
            drop.append(rid)
            self.known[rid] = (_UNEMBEDDED + document_hash(doc), 0)
            marked = self._pending_reason(doc, meta)
            if marked is not None:
                self._pending[rid] = marked  # set aside for this very document already
            else:
                redo.append((rid, doc))
        if drop:
            self.index.delete(drop)
        if up_ids:
            self.index.upsert(up_ids, up_terms, up_weights)
        return redo

    def _decoded(self, meta: Mapping[str, Any] | None) -> tuple[Any, Any] | None:
        """A record's stored vector as index input, or ``None`` if it is malformed."""
        try:
            terms, weights = decode_sparse_vector((meta or {})[self.sparse_key])
        except (CorruptSparseVectorError, KeyError, TypeError):
            return None
        return terms.astype(np.int64), weights.astype(np.float64)

    def _pending_reason(self, doc: str, meta: Mapping[str, Any] | None) -> str | None:
        marker = meta.get(self.pending_key) if meta else None
        if not isinstance(marker, str):
            return None
        digest, _, reason = marker.partition(" ")
        return reason if digest == document_hash(doc) else None

    def _forget(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        assert self.index is not None
        self.index.delete(ids)
        for rid in ids:
            self.known.pop(rid, None)
            self._pending.pop(rid, None)

    def _embed_back(self, redo: list[tuple[str, str]]) -> int:
        """Embed documents without a usable vector; store vectors, or set records aside.

        Returns:
            Records written to Chroma (each moves the watermark by one).
        """
        if not redo:
            return 0
        logger.info("embedding %d records whose sparse vector is missing or stale", len(redo))
        # Chunk by chunk, as writes go: memory stays flat and a kill keeps what was stored.
        step = max(1, min(WRITE_CHUNK, self._max_batch))
        return sum(
            self._embed_back_chunk(redo[start : start + step])
            for start in range(0, len(redo), step)
        )

    def _embed_back_chunk(self, redo: list[tuple[str, str]]) -> int:
        ids = [rid for rid, _ in redo]
        docs = [doc for _, doc in redo]
        vectors, aside = embed_or_set_aside(self.sparse_function, ids, docs)
        metadatas: list[dict[str, Any]] = []
        up_ids: list[str] = []
        up_terms: list[Any] = []
        up_weights: list[Any] = []
        for rid, doc in redo:
            digest = document_hash(doc)
            vector = vectors.get(rid)
            if vector is None:
                reason = aside.reasons[rid]
                # None removes a key on update: no stale vector may outlive the marker.
                metadatas.append(
                    {
                        self.sparse_key: None,
                        self.hash_key: None,
                        self.pending_key: f"{digest} {reason}",
                    }
                )
                self._pending[rid] = reason
                self.known[rid] = (_UNEMBEDDED + digest, 0)
                continue
            terms = np.asarray(vector.indices, dtype=np.int64)
            weights = np.asarray(vector.values, dtype=np.float64)
            encoded = encode_sparse_vector(terms, weights)
            metadatas.append(
                {self.sparse_key: encoded, self.hash_key: digest, self.pending_key: None}
            )
            self._pending.pop(rid, None)
            self.known[rid] = (digest, vector_hash(encoded))
            up_ids.append(rid)
            up_terms.append(terms)
            up_weights.append(weights)
        if aside.reasons:
            # INFO: each search with a sparse leg then warns once, naming them.
            logger.info(
                "%d records set aside as pending (no sparse vector until a refresh "
                "embeds them), e.g. %r: %s",
                len(aside.reasons),
                *next(iter(aside.reasons.items())),
            )
        for start, end in chunks(len(ids), self._max_batch):
            self.collection.update(ids=ids[start:end], metadatas=metadatas[start:end])
        if up_ids and self.index is not None:
            self.index.upsert(up_ids, up_terms, up_weights)
        return len(ids)

    def _count_agrees(self) -> bool:
        fresh = bool(self.collection.count() == len(self.known))
        self._stale = not fresh
        return fresh

    # ------------------------------------------------------------------ our own writes

    def mark(self) -> int | None:
        """The watermark now, to hand back to `wrote` after a write (``None``: none)."""
        if self._watermark is None or self.index is None:
            return None
        return self._watermark.read()

    def wrote(
        self,
        before: int | None,
        sent: int,
        *,
        vectors: Sequence[tuple[str, Fingerprint, Any, Any]] = (),
        without_document: Sequence[str] = (),
        deleted: Sequence[str] = (),
    ) -> None:
        """Record a successful write of ours in the cache.

        Args:
            before: `mark` before the write.
            sent: Records sent to Chroma (the watermark moves by that much).
            vectors: ``(id, fingerprint, term ids, weights)`` of records we embedded.
            without_document: New records without a document.
            deleted: Records we deleted.
        """
        if self.index is None:
            return
        if vectors:
            self.index.upsert(
                [v[0] for v in vectors], [v[2] for v in vectors], [v[3] for v in vectors]
            )
            for rid, print_, _, _ in vectors:
                self.known[rid] = print_
                self._pending.pop(rid, None)
        for rid in without_document:
            self.known[rid] = None
        self._forget(deleted)
        if self._watermark is None:
            self._count_agrees()
        elif before is not None and before == self._seen:
            now = self._watermark.read()
            if now - before == sent:
                self._seen = now
            # else others wrote too: the next search catches up from `_seen`, which
            # re-reads our records along with theirs.
        if self._store is not None:
            self._store.changed(sent)
            self._maybe_save()

    def write_failed(self) -> None:
        """A write of ours failed part-way: Chroma may hold some of it."""
        if self._watermark is None:
            self._stale = True
        # With a watermark, `_seen` did not move: the next search catches up on whatever
        # Chroma took.

    def close(self) -> None:
        """Save the snapshot if the cache changed since the last one; release sqlite."""
        with self.lock:
            if self._store is not None:
                self._store.close(self._capture)
            if self._watermark is not None:
                self._watermark.close()

    # ------------------------------------------------------------------ snapshots

    def _open_snapshot(self) -> bool:
        """Build the cache from the saved snapshot and catch up; False: read Chroma."""
        store, watermark = self._store, self._watermark
        if store is None or watermark is None:
            return False
        started = time.perf_counter()
        now = watermark.read()
        state = store.load()
        if state is None or state.watermark > now:
            # Missing, damaged, foreign, or newer than Chroma (a restored backup).
            logger.info("no usable sparse index snapshot at %s: reading Chroma", store.path)
            return False
        self.index, self.known, self._pending = state.index, state.known, state.pending
        self._seen, self._stale = state.watermark, False
        if (now != state.watermark and not self._catch_up(now)) or not self._count_agrees_now():
            logger.info("sparse index snapshot %s disagrees with Chroma: reading it", store.path)
            self._forget_all()
            return False
        self._retry_pending()
        self.opened_from = "snapshot"
        logger.info(
            "opened the sparse index from snapshot %s (%d records, %d writes since) in %.2f s",
            store.path,
            len(self.known),
            now - state.watermark,
            time.perf_counter() - started,
        )
        return True

    def _count_agrees_now(self) -> bool:
        """Chroma holds as many records as the cache knows, when no one is writing.

        A check the snapshot's checksums cannot make: a Chroma folder restored from an
        older backup beside a newer snapshot, say.
        """
        assert self._watermark is not None
        first = self._watermark.read()
        count = self._watermark.count()
        if count is None:
            count = self.collection.count()
        if first != self._seen or self._watermark.read() != first:
            return True  # writes in flight: the next search catches up on them
        return bool(count == len(self.known))

    def _retry_pending(self) -> None:
        """Embed the pending records again, as a full load does."""
        if not self._pending or self._watermark is None:
            return
        ids = sorted(self._pending)
        redo: list[tuple[str, str]] = []
        for start, end in chunks(len(ids), self._max_batch):
            got = self.collection.get(ids=ids[start:end], include=["documents"])
            redo += [
                (rid, doc)
                for rid, doc in zip(got["ids"], got["documents"], strict=True)
                if doc is not None
            ]
        before = self._watermark.read()
        sent = self._embed_back(redo)
        if before == self._seen and self._watermark.read() - before == sent:
            self._seen = before + sent
        if self._store is not None:
            self._store.changed(sent)

    def _forget_all(self) -> None:
        self.index, self.known, self._pending = None, {}, {}
        self._seen, self._stale = None, True

    def _capture(self) -> CacheState | None:
        """The cache as it is now, frozen for a snapshot (under `lock`)."""
        if self.index is None or self._stale or self._seen is None:
            return None
        return CacheState(freeze(self.index), dict(self.known), dict(self._pending), self._seen)

    def _maybe_save(self) -> None:
        if self._store is not None:
            self._store.maybe_save(self._capture)

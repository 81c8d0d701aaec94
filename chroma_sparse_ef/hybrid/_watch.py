"""What changed in an embedded collection, read from Chroma's sqlite (PersistentClient only).

On a ``PersistentClient``, Chroma keeps in ``<persist_dir>/chroma.sqlite3`` (checked on
chromadb 1.5.9):

- ``max_seq_id``: the last log sequence number applied to each segment. The row of the
  collection's METADATA segment goes up by one for every record of every add, upsert,
  update or delete on that collection (even a delete of an unknown id, or an add of an
  existing one), from any client in any process, and not for writes to other collections.
  Reading it on an open read-only connection takes ~10 µs. This is the *watermark*.
- ``embeddings_queue``: the write-ahead log, one row per record per write: ``seq_id``
  (global across collections), ``operation`` (0 add, 1 update, 2 upsert, 3 delete),
  ``topic`` (``persistent://<tenant>/<database>/<collection id>``, where tenant and
  database are not the client's names: ``default/default`` for the default ones, so only
  the collection id at its end is matched) and the record ``id``.
  Chroma purges a prefix of it (``automatically_purge``) once every segment has
  persisted past it.
- ``embeddings``: the metadata segment's records, each with the ``seq_id`` of the last
  write that touched it (an integer on 1.5.x).

`SqliteWatermark.changes` answers "which records changed since watermark ``w``": from the
log when its history since ``w`` is intact (a primary-key range read, proportional to the
writes since), else from the records' ``seq_id`` (a scan of the collection's rows, which
gives adds and changes but not deletes: the caller then compares ids). Either way it only
says *which* ids changed; their content is read through Chroma's public API.

What the collection model offers instead does not work locally: ``version`` and
``log_position`` stay 0, and ``count()`` misses updates.

This reads a schema Chroma does not document. Everything is guarded: if the file, the
tables or the row layout are not what 1.5.x has, `SqliteWatermark.open` returns ``None``
and `changes` returns ``None``, and HybridCollection falls back to a full reload or to the
checks every client gets (see `_coherence`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from .._chroma_compat import (
    OP_DELETE,
    OP_KNOWN,
    SQL_ALL_IDS,
    SQL_COUNT,
    SQL_LOG_HAS,
    SQL_LOG_RANGE,
    SQL_METADATA_SEGMENT,
    SQL_SEQ_ID,
    SQL_SEQ_TYPE,
    SQL_TOUCHED_SINCE,
    log_topic_pattern,
    sqlite_path,
)

__all__ = ["Changes", "SqliteWatermark"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Changes:
    """Records that changed between two watermarks.

    Attributes:
        upserted: Ids added, upserted or updated (their last write was not a delete).
        deleted: Ids deleted, or ``None`` when the log no longer says (read the ids
            present instead).
    """

    upserted: tuple[str, ...]
    deleted: tuple[str, ...] | None


class SqliteWatermark:
    """Reads one collection's watermark and change history from a ``PersistentClient``.

    Not thread-safe on its own; HybridCollection reads it under its lock.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        segment_id: str,
        collection_id: str,
        directory: str | None = None,
    ) -> None:
        self._connection = connection
        #: The PersistentClient's folder (where the sparse index snapshot lives).
        self.directory = directory
        self._segment_id = segment_id
        # A uuid holds no LIKE wildcard; the range on the primary key keeps the scan short.
        self._topic_pattern = log_topic_pattern(collection_id)

    @classmethod
    def open(cls, client: Any, collection_id: str) -> SqliteWatermark | None:
        """Open the watermark of a collection, or ``None`` when there is no such signal.

        Args:
            client: A chromadb client; only a persistent embedded one has the file.
            collection_id: The collection's id.

        Returns:
            The watermark reader, or ``None`` (not a persistent embedded client, or the
            sqlite layout is not the one this was written against).
        """
        try:
            path = sqlite_path(client)
            if path is None or not os.path.exists(path):
                return None
            directory = os.path.dirname(path)
            # Read-only and autocommit: we never write, and never hold a read transaction
            # open, so Chroma's own writers are not blocked.
            connection = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            row = connection.execute(SQL_METADATA_SEGMENT, (collection_id,)).fetchone()
            if row is None:
                connection.close()
                return None
            watermark = cls(connection, str(row[0]), collection_id, directory)
            watermark.read()  # fail here, not at the first search, if the table differs
        except Exception as exc:  # an unofficial schema: any surprise means "no signal"
            logger.debug("no sqlite watermark for collection %s: %r", collection_id, exc)
            return None
        return watermark

    def read(self) -> int:
        """The collection's current watermark (0 before its first write).

        Raises:
            sqlite3.Error: The database could not be read.
        """
        row = self._connection.execute(SQL_SEQ_ID, (self._segment_id,)).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def changes(self, since: int, until: int) -> Changes | None:
        """The records written after watermark ``since`` up to ``until``.

        Returns:
            The changes, or ``None`` when they cannot be told apart safely (an unknown
            layout or operation, or no trace of a write the watermark says happened):
            the caller reloads everything.
        """
        try:
            from_log = self._from_log(since, until)
            if from_log is not None:
                return from_log
            return self._from_records(since)
        except Exception as exc:  # an unofficial schema: any surprise means "reload"
            logger.debug("changes since %d unreadable: %r", since, exc)
            return None

    def present_ids(self) -> set[str] | None:
        """Every record id of the collection now, or ``None`` if unreadable."""
        try:
            rows = self._connection.execute(SQL_ALL_IDS, (self._segment_id,)).fetchall()
        except Exception as exc:
            logger.debug("record ids unreadable: %r", exc)
            return None
        return {str(row[0]) for row in rows}

    def count(self) -> int | None:
        """The collection's record count from the metadata segment, or ``None`` if unreadable.

        ~10 ms at 100k records, where ``collection.count()`` took ~200 ms (chromadb 1.5.9).
        """
        try:
            row = self._connection.execute(SQL_COUNT, (self._segment_id,)).fetchone()
        except Exception as exc:
            logger.debug("record count unreadable: %r", exc)
            return None
        return None if row is None else int(row[0])

    def _from_log(self, since: int, until: int) -> Changes | None:
        # `since` is this collection's own last write when the cache last looked. Chroma
        # purges each collection's log by prefix, so the history after it is whole only
        # while that row is kept (with no write yet, nothing proves it: read the records).
        if since <= 0:
            return None
        kept = self._connection.execute(SQL_LOG_HAS, (since, self._topic_pattern)).fetchone()
        if kept is None:
            return None
        rows = self._connection.execute(
            SQL_LOG_RANGE, (since, until, self._topic_pattern)
        ).fetchall()
        if not rows and until > since:
            return None  # the watermark moved but the log shows nothing: not our layout
        last: dict[str, int] = {}
        for _, operation, record_id in rows:
            if int(operation) not in OP_KNOWN:
                return None
            last[str(record_id)] = int(operation)
        return Changes(
            upserted=tuple(rid for rid, op in last.items() if op != OP_DELETE),
            deleted=tuple(rid for rid, op in last.items() if op == OP_DELETE),
        )

    def _from_records(self, since: int) -> Changes | None:
        kind = self._connection.execute(SQL_SEQ_TYPE, (self._segment_id,)).fetchone()
        if kind is not None and kind[0] != "integer":
            return None  # older layouts stored seq_id as bytes: no ordered comparison
        rows = self._connection.execute(SQL_TOUCHED_SINCE, (self._segment_id, since)).fetchall()
        return Changes(upserted=tuple(str(row[0]) for row in rows), deleted=None)

    def close(self) -> None:
        """Close the read-only connection."""
        self._connection.close()

"""A cheap signal that an embedded collection was written to: the sqlite log watermark.

On a ``PersistentClient``, Chroma records in ``<persist_dir>/chroma.sqlite3``, table
``max_seq_id``, the last log sequence number applied to each segment. The row of the
collection's METADATA segment goes up by one for every record of every add, upsert, update
or delete on that collection (found on chromadb 1.5.9: even a delete of an unknown id, or an
add of an existing one, counts), from any client in any process, and not for writes to
other collections. Reading it on an open read-only connection takes ~10 µs.

What the collection model offers instead does not work locally: ``version`` and
``log_position`` stay 0, and ``count()`` misses updates.

This reads a schema Chroma does not document. Everything is guarded: if the file, the
tables or the row layout are not what 1.5.x has, `SqliteWatermark.open` returns ``None``
and HybridCollection falls back to the checks every client gets (see `_local`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

__all__ = ["SqliteWatermark"]

logger = logging.getLogger(__name__)

_SEGMENT_QUERY = "SELECT id FROM segments WHERE scope = 'METADATA' AND collection = ?"
_SEQ_QUERY = "SELECT seq_id FROM max_seq_id WHERE segment_id = ?"


class SqliteWatermark:
    """Reads the log watermark of one collection of a ``PersistentClient``.

    Not thread-safe on its own; HybridCollection reads it under its lock.
    """

    def __init__(self, connection: sqlite3.Connection, segment_id: str) -> None:
        self._connection = connection
        self._segment_id = segment_id

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
            settings = client.get_settings()
            impl = str(settings.chroma_api_impl)
            if not settings.is_persistent or not impl.endswith(("RustBindingsAPI", "SegmentAPI")):
                return None
            path = os.path.join(str(settings.persist_directory), "chroma.sqlite3")
            if not os.path.exists(path):
                return None
            # Read-only and autocommit: we never write, and never hold a read transaction
            # open, so Chroma's own writers are not blocked.
            connection = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            row = connection.execute(_SEGMENT_QUERY, (collection_id,)).fetchone()
            if row is None:
                connection.close()
                return None
            watermark = cls(connection, str(row[0]))
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
        row = self._connection.execute(_SEQ_QUERY, (self._segment_id,)).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        """Close the read-only connection."""
        self._connection.close()

"""Ingest: embedding and writing records in bounded chunks, shared by both backends.

A write is cut into chunks of at most `WRITE_CHUNK` records (and never more than the
client's max batch size). Each chunk is embedded (dense, unless embeddings were given,
then sparse) and then written to Chroma before the next chunk is embedded, so:

- memory holds one chunk's vectors, whatever the input size;
- a failure (an embedding error, a Chroma error, a kill) loses at most the chunk in
  flight: every earlier chunk is in Chroma with its vectors, and rerunning the same write
  embeds only what is missing or changed (the local backend skips records whose stored
  vector came from the same document, see `ChunkWriter`);
- one progress bar counts records written, with how many were embedded and skipped.

A backend supplies a `ChunkWriter`: what to skip, how a sparse vector is stored, what the
cache learns. The loop, the embedding calls and the Chroma calls are here.

`embed_or_set_aside` is the background path (a refresh that finds records written by other
code): a record the service refuses is returned as set aside with the reason instead of
failing the refresh, so one bad record never breaks search.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chromadb.api.types import SparseVector

from .._chroma_compat import embed_like_add
from .._exceptions import EmbeddingError, InvalidRequestError, InvalidResponseError
from .._progress import progress_bar
from ._writes import WriteBatch, as_sparse_vectors, chunks

__all__ = [
    "WRITE_CHUNK",
    "ChunkWriter",
    "SetAside",
    "WriteSummary",
    "embed_dense",
    "embed_or_set_aside",
    "embed_sparse",
    "ingest",
    "send",
]

logger = logging.getLogger(__name__)

#: Records embedded and written per step. A kill loses at most one chunk's embedding
#: work, so this bounds what a crash costs: `bench/bench_ingest.py kill` (five kills at
#: random points of a 20,000-document upsert, each followed by a rerun) measured 1.02x
#: the texts embedded on average, 1.05x at worst (one whole chunk). 1,000 texts are 10
#: requests of the service's 100-text cap, all in flight at once under the function's
#: default 16 workers, so a chunk still keeps the connections busy.
WRITE_CHUNK = 1_000
#: Longest reason kept for a set-aside record (it is stored in the record's metadata).
_REASON_CHARS = 200


@dataclass(slots=True)
class WriteSummary:
    """What one ``add``/``upsert``/``update`` did.

    Attributes:
        written: Records sent to Chroma (including metadata-only updates).
        embedded: Records whose document was embedded (dense and sparse).
        skipped: Records whose stored vectors already came from the same document:
            neither function was called for them.
        ignored: Records Chroma ignores: an ``add`` of an existing id, an ``update`` of
            a missing one.
    """

    written: int = 0
    embedded: int = 0
    skipped: int = 0
    ignored: int = 0

    def __iadd__(self, other: WriteSummary) -> WriteSummary:
        self.written += other.written
        self.embedded += other.embedded
        self.skipped += other.skipped
        self.ignored += other.ignored
        return self


class ChunkWriter(Protocol):
    """What a backend does with one chunk of a write."""

    def write_chunk(self, op: str, part: WriteBatch) -> WriteSummary:
        """Embed what needs it, write the chunk to Chroma, update any cache.

        Raises:
            EmbeddingError: A function failed; nothing of this chunk was written.
        """
        ...


def ingest(
    op: str, batch: WriteBatch, writer: ChunkWriter, *, chunk_size: int, progress: bool
) -> WriteSummary:
    """Write ``batch`` chunk by chunk through ``writer``; see the module docstring.

    Raises:
        Whatever ``writer`` raises; earlier chunks stay written.
    """
    total = WriteSummary()
    size = max(1, min(chunk_size, WRITE_CHUNK))
    with progress_bar(progress and len(batch.ids) > 0, len(batch.ids), op, unit="record") as bar:
        for start, end in chunks(len(batch.ids), size):
            done = writer.write_chunk(op, batch.select(range(start, end)))
            total += done
            bar.update(end - start)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(embedded=total.embedded, skipped=total.skipped, refresh=False)
    logger.info(
        "%s: %d records written, %d embedded, %d skipped (unchanged), %d ignored",
        op,
        total.written,
        total.embedded,
        total.skipped,
        total.ignored,
    )
    return total


def embed_dense(collection: Any, texts: list[str]) -> Any:
    """Dense embeddings exactly as ``collection.add`` would compute them.

    The collection's own path (`_chroma_compat.embed_like_add`): the function passed in,
    else the persisted or schema one, else Chroma's default.
    """
    if not texts:
        return []
    return embed_like_add(collection, texts)


def embed_sparse(
    function: Callable[[list[str]], Sequence[Any]], texts: list[str]
) -> list[SparseVector]:
    """Sparse vectors for ``texts`` in one call of the function.

    Raises:
        InvalidResponseError: The function returned the wrong number of vectors.
        InvalidInputError: It returned something other than ``SparseVector``.
        Whatever the function raises.
    """
    if not texts:
        return []
    vectors = list(function(texts))
    if len(vectors) != len(texts):
        raise InvalidResponseError(
            f"The embedding function returned {len(vectors)} vectors for {len(texts)} texts"
        )
    return as_sparse_vectors(vectors, "documents")


def send(
    collection: Any,
    op: str,
    ids: list[str],
    *,
    embeddings: Any,
    metadatas: list[dict[str, Any] | None] | None,
    documents: list[str | None] | None,
) -> None:
    """One Chroma write call; all-empty metadata is sent as ``None``, as Chroma prefers."""
    if not ids:
        return
    getattr(collection, op)(
        ids=ids,
        embeddings=embeddings,
        metadatas=metadatas if metadatas is not None and any(metadatas) else None,
        documents=documents,
    )


@dataclass(frozen=True, slots=True)
class SetAside:
    """Records a background refresh could not embed.

    Attributes:
        reasons: Record id to a one-line reason (the error type and message).
    """

    reasons: dict[str, str] = field(default_factory=dict)


def embed_or_set_aside(
    function: Callable[[list[str]], Sequence[Any]], ids: list[str], texts: list[str]
) -> tuple[dict[str, SparseVector], SetAside]:
    """Embed for a background refresh: what fails is set aside, never raised.

    The service refuses a whole request for one bad text (400, or 413 for a text over
    its limit), so a refused request is split in halves until the refused texts stand
    alone; those are set aside with the service's reason and the rest are embedded. Any
    other failure of this package's function (service unreachable, 5xx after retries, a
    wrong key) sets aside the whole request's records: retrying them one by one would only
    multiply the failure. Another package's function cannot tell those apart, so its
    errors are split like a refusal.

    Returns:
        Vectors by record id, and the records set aside.
    """
    vectors: dict[str, SparseVector] = {}
    aside: dict[str, str] = {}
    pending: list[tuple[list[str], list[str]]] = [
        (ids[start:end], texts[start:end]) for start, end in chunks(len(ids), WRITE_CHUNK)
    ]
    while pending:
        part_ids, part_texts = pending.pop()
        try:
            got = embed_sparse(function, part_texts)
        except InvalidRequestError as exc:
            if len(part_ids) == 1:
                aside[part_ids[0]] = _reason(exc)
                continue
            half = len(part_ids) // 2
            pending.append((part_ids[half:], part_texts[half:]))
            pending.append((part_ids[:half], part_texts[:half]))
            continue
        except (EmbeddingError, OSError) as exc:
            reason = _reason(exc)
            aside.update(dict.fromkeys(part_ids, reason))
            continue
        except Exception as exc:
            # Another package's function (chromadb's own SPLADE function raises RuntimeError
            # for everything, a refused text included) cannot say whether one text or the
            # service is at fault: split as for a refusal, so one bad text cannot keep a
            # whole chunk out of the sparse leg, and never let it break a search.
            if len(part_ids) == 1:
                aside[part_ids[0]] = _reason(exc)
                continue
            half = len(part_ids) // 2
            pending.append((part_ids[half:], part_texts[half:]))
            pending.append((part_ids[:half], part_texts[:half]))
            continue
        vectors.update(zip(part_ids, got, strict=True))
    return vectors, SetAside(aside)


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"

"""Write input, checked before anything is embedded or written; the pieces it is cut into.

Both backends accept Chroma's argument conventions (one item or a list; ``ids`` required;
``documents``, ``metadatas``, ``embeddings`` optional and aligned with ``ids``). Input is
normalised and validated by chromadb's own functions first, so the errors are Chroma's,
re-raised as `InvalidInputError`; then HybridCollection's own rule (reserved metadata keys).
Images and URIs are not supported: a sparse vector needs text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chromadb.api.types import (
    SparseVector,
    normalize_insert_record_set,
    validate_insert_record_set,
)
from chromadb.errors import ChromaError

from .._exceptions import InvalidInputError
from ._stored import check_user_metadatas

__all__ = ["WriteBatch", "as_sparse_vectors", "chunks", "merge_metadata"]


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Normalised write input; every present list is as long as ``ids``.

    Attributes:
        ids: Unique record ids.
        documents: Documents (``None`` entries mean "no document" / "unchanged").
        metadatas: User metadata dicts (``None`` entries allowed).
        embeddings: Dense embeddings as lists of floats.
    """

    ids: list[str]
    documents: list[str | None] | None
    metadatas: list[dict[str, Any] | None] | None
    embeddings: list[list[float]] | None

    @classmethod
    def parse(
        cls,
        op: str,
        *,
        ids: Any,
        documents: Any = None,
        metadatas: Any = None,
        embeddings: Any = None,
        reserved: tuple[str, ...],
        needs_vectors: bool,
        local: bool = True,
    ) -> WriteBatch:
        """Normalise and validate one write's arguments.

        Args:
            op: ``"add"``, ``"upsert"`` or ``"update"``, for messages.
            ids: One id or a list.
            documents: One document or a list, or ``None``.
            metadatas: One metadata dict or a list, or ``None``.
            embeddings: One embedding or a list, or ``None``.
            reserved: Metadata keys user metadata may not use.
            needs_vectors: Every record must end with a dense embedding (add, upsert):
                without ``embeddings``, every document must be a string.
            local: Embedded Chroma, which cannot store a ``SparseVector`` in metadata.

        Returns:
            The batch.

        Raises:
            InvalidInputError: Chroma would refuse the input, a reserved key is used, or
                a record has neither a document nor an embedding.
        """
        try:
            record_set = normalize_insert_record_set(
                ids=ids, embeddings=embeddings, metadatas=metadatas, documents=documents
            )
            validate_insert_record_set(record_set)
        except (TypeError, ValueError, ChromaError) as exc:
            raise InvalidInputError(f"Invalid {op} input: {exc}") from exc
        docs = record_set["documents"]
        if docs is not None:
            for position, doc in enumerate(docs):
                if doc is not None and not isinstance(doc, str):
                    raise InvalidInputError(
                        f"Invalid {op} input: documents[{position}] must be a string or None, "
                        f"got {type(doc).__name__}"
                    )
        vectors = record_set["embeddings"]
        if vectors is None and (needs_vectors or docs is not None):
            # Without embeddings, each record's dense embedding comes from its document.
            present: list[Any] = list(docs) if docs is not None else [None] * len(record_set["ids"])
            for position, item in enumerate(present):
                if item is None:
                    raise InvalidInputError(
                        f"Invalid {op} input: record {record_set['ids'][position]!r} has no "
                        "document and no embedding; give one or the other"
                    )
        metas: list[dict[str, Any] | None] | None = (
            None
            if record_set["metadatas"] is None
            else [None if m is None else dict(m) for m in record_set["metadatas"]]
        )
        check_user_metadatas(metas, reserved)  # type: ignore[arg-type]
        # What chromadb's validation lets through but its write then refuses: caught here,
        # so nothing is embedded (or half-written) for a write that cannot succeed.
        for position, rid in enumerate(record_set["ids"]):
            if not rid:
                raise InvalidInputError(f"Invalid {op} input: ids[{position}] is empty")
        for position, meta in enumerate(metas or []):
            for key, value in (meta or {}).items():
                where = f"Invalid {op} input: metadatas[{position}][{key!r}]"
                if key.startswith("#"):
                    raise InvalidInputError(f"{where}: keys starting with '#' are Chroma's own")
                if value is None and op != "update":
                    raise InvalidInputError(
                        f"{where} is None: only update takes None (it removes the key)"
                    )
                if local and isinstance(value, SparseVector):
                    raise InvalidInputError(
                        f"{where} is a SparseVector, which embedded Chroma cannot store; the "
                        "hybrid collection embeds and stores each document's sparse vector itself"
                    )
        return cls(
            ids=list(record_set["ids"]),
            documents=None if docs is None else list(docs),
            metadatas=metas,
            embeddings=None if vectors is None else [list(map(float, v)) for v in vectors],
        )

    def select(self, positions: Iterable[int]) -> WriteBatch:
        """The records at ``positions``, in that order."""
        keep = list(positions)

        def pick(values: list[Any] | None) -> Any:
            return None if values is None else [values[i] for i in keep]

        return WriteBatch(
            ids=pick(self.ids),
            documents=pick(self.documents),
            metadatas=pick(self.metadatas),
            embeddings=pick(self.embeddings),
        )

    def documents_to_embed(self) -> list[tuple[int, str]]:
        """Positions and texts of the records that carry a document."""
        if self.documents is None:
            return []
        return [(i, doc) for i, doc in enumerate(self.documents) if doc is not None]


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` spans covering ``range(n)`` in pieces of at most ``size``."""
    for start in range(0, n, max(1, size)):
        yield start, min(n, start + size)


def as_sparse_vectors(values: Sequence[Any], what: str) -> list[SparseVector]:
    """Check a sparse function's output is SparseVectors.

    Raises:
        InvalidInputError: An item is not a ``SparseVector``.
    """
    for item in values:
        if not isinstance(item, SparseVector):
            raise InvalidInputError(
                f"The sparse embedding function returned {type(item).__name__} for {what}, "
                "expected chromadb SparseVector"
            )
    return list(values)


def merge_metadata(
    user: Mapping[str, Any] | None, hidden: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """User metadata plus hidden keys; ``None`` when both are empty."""
    merged = {**(user or {}), **(hidden or {})}
    return merged or None

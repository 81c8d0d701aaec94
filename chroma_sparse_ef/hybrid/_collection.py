"""`HybridCollection`: one hybrid-search API for Chroma Cloud and embedded Chroma.

How a collection is opened and which backend it gets is `_open`'s concern; this module is
the API users hold: writes, reads and search, delegated to the backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

from chromadb.api.types import SparseEmbeddingFunction, maybe_cast_one_to_many
from chromadb.execution.expression import Key, Search, Where

from .._exceptions import InvalidInputError
from ._backend import HybridBackend
from ._coherence import PendingRecord
from ._defaults import DEFAULT_CANDIDATE_LIMIT, DEFAULT_RRF_K, DEFAULT_SEARCH_LIMIT, DEFAULT_SELECT
from ._ingest import WriteSummary
from ._open import DEFAULT_SPARSE_KEY, Backend, create_or_open, open_existing
from ._results import SearchResults
from ._search_args import TextSearch
from ._stored import (
    strip_hidden,
)
from ._writes import WriteBatch

__all__ = ["DEFAULT_SPARSE_KEY", "Backend", "HybridCollection"]

Mode = Literal["hybrid", "dense", "sparse"]


class _ReadOrDeprecatedOpen:
    """``collection.get(...)`` reads records; ``HybridCollection.get(client, name)`` is old.

    Opening is `HybridCollection.open`. The class-level ``get`` that opened a collection in
    earlier releases still works, with a `DeprecationWarning`, so code written for them
    keeps running while it moves to ``open``.
    """

    @overload
    def __get__(
        self, obj: None, owner: type[HybridCollection]
    ) -> Callable[..., HybridCollection]: ...

    @overload
    def __get__(
        self, obj: HybridCollection, owner: type[HybridCollection] | None
    ) -> Callable[..., Any]: ...

    def __get__(
        self, obj: HybridCollection | None, owner: type[HybridCollection] | None = None
    ) -> Callable[..., Any]:
        if obj is None:
            opener = (owner or HybridCollection).open

            def deprecated_open(*args: Any, **kwargs: Any) -> HybridCollection:
                warnings.warn(
                    "HybridCollection.get(client, name, ...) is deprecated: use "
                    "HybridCollection.open(client, name, ...); collection.get(...) reads records",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return opener(*args, **kwargs)

            return deprecated_open
        return obj._get_records


class HybridCollection:
    """A Chroma collection with dense and sparse embeddings, searched with RRF.

    Open one with `get_or_create` or `open`. On Chroma Cloud everything is native (a
    sparse index in the schema, one ``Search`` per query); on embedded Chroma the sparse
    vectors are stored in each record's metadata and an exact in-memory index answers the
    sparse leg (see `chroma_sparse_ef.hybrid._coherence` for how it follows writes made by
    other code). Writes and reads take Chroma's arguments. Thread-safe.
    """

    def __init__(self, backend: HybridBackend) -> None:
        """Wrap a backend; use `get_or_create` or `open` instead."""
        self._backend = backend

    # ------------------------------------------------------------------ opening

    @classmethod
    def get_or_create(
        cls,
        client: Any,
        name: str,
        *,
        sparse_embedding_function: SparseEmbeddingFunction[Any],
        embedding_function: Any = None,
        sparse_key: str = DEFAULT_SPARSE_KEY,
        metadata: dict[str, Any] | None = None,
        backend: Backend = "auto",
        bm25: bool | None = None,
    ) -> HybridCollection:
        """Open the hybrid collection ``name``, creating it if it does not exist.

        Args:
            client: A chromadb client (``PersistentClient``, ``EphemeralClient``,
                ``HttpClient``, ``CloudClient``).
            name: The collection name.
            sparse_embedding_function: The sparse function, e.g.
                `chroma_sparse_ef.ChromaSparseEmbeddingFunction`. Stored with the
                collection by its registered name and config.
            embedding_function: The dense function, passed to chromadb as is; ``None``
                means chromadb's default for that client (which downloads a model).
            sparse_key: The metadata key of the sparse vectors.
            metadata: Collection metadata, for a new collection.
            backend: ``"auto"``, ``"native"`` or ``"local"`` (see the module docstring).
            bm25: Rank the sparse leg as Chroma Cloud's ``bm25=True`` sparse index does:
                each query weight scaled by ``idf(t) = ln(1 + (n - n_t + 0.5) / (n_t +
                0.5))`` in float32 (``n`` records in the collection, ``n_t`` those holding
                ``t``). ``None``: on for chromadb's ``ChromaBm25EmbeddingFunction``, off
                otherwise. Stored with the collection and restored when it is reopened.

        Returns:
            The collection.

        Raises:
            ConfigurationError: A bad argument, or the existing collection was created
                with another sparse key, sparse function or ``bm25`` value.
            HybridLayoutError: The existing collection is not a hybrid collection.
        """
        return cls(
            create_or_open(
                client,
                name,
                sparse_embedding_function=sparse_embedding_function,
                embedding_function=embedding_function,
                sparse_key=sparse_key,
                metadata=metadata,
                backend=backend,
                bm25=bm25,
            )
        )

    @classmethod
    def open(
        cls,
        client: Any,
        name: str,
        *,
        embedding_function: Any = None,
        sparse_embedding_function: SparseEmbeddingFunction[Any] | None = None,
        backend: Backend = "auto",
    ) -> HybridCollection:
        """Open an existing hybrid collection, rebuilding its sparse function by name.

        The function is rebuilt through chromadb's sparse registry from the config stored
        with the collection (in its schema on Chroma Cloud, in its metadata on embedded
        Chroma), so its package must be imported first (``import chroma_sparse_ef``).

        Args:
            client: A chromadb client.
            name: The collection name.
            embedding_function: The dense function; ``None`` means chromadb's default.
            sparse_embedding_function: Use this function instead of the stored one.
            backend: ``"auto"`` follows the collection's layout.

        Returns:
            The collection.

        Raises:
            chromadb.errors.NotFoundError: No collection ``name``.
            HybridLayoutError: It is not a hybrid collection, or its sparse function is
                not registered (import its package, or pass it).
        """
        return cls(
            open_existing(
                client,
                name,
                embedding_function=embedding_function,
                sparse_embedding_function=sparse_embedding_function,
                backend=backend,
            )
        )

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """The collection name."""
        return str(self._backend.collection.name)

    @property
    def collection(self) -> Any:
        """The underlying chromadb ``Collection``. Writes through it are detected, see above."""
        return self._backend.collection

    @property
    def backend(self) -> Literal["local", "native"]:
        """``"local"`` (embedded Chroma, our sparse index) or ``"native"`` (Chroma Cloud)."""
        return self._backend.kind

    @property
    def sparse_key(self) -> str:
        """The metadata key of the sparse vectors."""
        return self._backend.sparse_key

    @property
    def sparse_embedding_function(self) -> Any:
        """The sparse embedding function in use."""
        return self._backend.sparse_function

    @property
    def bm25(self) -> bool:
        """Whether the sparse leg ranks with Chroma Cloud's BM25 IDF (see `get_or_create`)."""
        return self._backend.bm25

    # ------------------------------------------------------------------ writes

    def add(
        self,
        ids: Any,
        documents: Any = None,
        metadatas: Any = None,
        embeddings: Any = None,
        *,
        progress: bool = False,
    ) -> WriteSummary:
        """Add records; existing ids are ignored (and not embedded), as Chroma does.

        Records are embedded and written in chunks (`_ingest.WRITE_CHUNK` records, at
        most the client's max batch size): a chunk's dense embeddings (unless given) and
        sparse vectors are computed, then the chunk is written, then the next one starts.
        Memory holds one chunk's vectors whatever the input size.

        On failure: an embedding error raises before anything of its chunk is written;
        every earlier chunk is in Chroma, complete with its vectors, and later chunks
        were not embedded. A kill loses at most the chunk in flight. Chroma has no
        transaction across its calls, so a Chroma error may leave part of a chunk
        written; the search cache notices. Rerunning the same write is safe and cheap:
        on embedded Chroma a record whose stored vector came from the same document is
        not embedded again (`upsert` and `update`), so only what is missing or changed
        is paid for.

        Args:
            ids: One id or a list.
            documents: One document or a list, aligned with ``ids``.
            metadatas: One metadata dict or a list; the sparse key is reserved.
            embeddings: Dense embeddings, to skip the dense function.
            progress: Show a progress bar (tqdm) counting records written, with how many
                were embedded and skipped.

        Returns:
            How many records were written, embedded, skipped (unchanged) and ignored
            (also logged at INFO on ``chroma_sparse_ef.hybrid._ingest``).

        Raises:
            InvalidInputError: Input Chroma would refuse, a reserved metadata key, or a
                record with neither document nor embedding. Raised before any request.
            EmbeddingError: The sparse function failed (e.g. `InvalidRequestError` for a
                text the service refuses); nothing of the failing chunk was written.
        """
        return self._write(
            "add", ids, documents, metadatas, embeddings, progress, needs_vectors=True
        )

    def upsert(
        self,
        ids: Any,
        documents: Any = None,
        metadatas: Any = None,
        embeddings: Any = None,
        *,
        progress: bool = False,
    ) -> WriteSummary:
        """Insert records or update existing ones (metadata merged, as Chroma does).

        On embedded Chroma, a record whose stored document is the one given and whose
        stored sparse vector came from it is not embedded again (neither function is
        called): only its new metadata or given embeddings are written. Same arguments,
        return value and errors as `add`.
        """
        return self._write(
            "upsert", ids, documents, metadatas, embeddings, progress, needs_vectors=True
        )

    def update(
        self,
        ids: Any,
        documents: Any = None,
        metadatas: Any = None,
        embeddings: Any = None,
        *,
        progress: bool = False,
    ) -> WriteSummary:
        """Update existing records; unknown ids are ignored, as Chroma does.

        A new document gets a new sparse vector (and dense embedding, unless given); an
        unchanged document or metadata alone embeds nothing. Metadata is merged as Chroma
        merges it. Same arguments, return value and errors as `add`.
        """
        return self._write(
            "update", ids, documents, metadatas, embeddings, progress, needs_vectors=False
        )

    def _write(
        self,
        op: str,
        ids: Any,
        documents: Any,
        metadatas: Any,
        embeddings: Any,
        progress: bool,
        *,
        needs_vectors: bool,
    ) -> WriteSummary:
        batch = WriteBatch.parse(
            op,
            ids=ids,
            documents=documents,
            metadatas=metadatas,
            embeddings=embeddings,
            reserved=self._backend.reserved,
            needs_vectors=needs_vectors,
            local=not self._backend.stores_sparse_vectors,
        )
        return self._backend.write(op, batch, progress=bool(progress))

    def delete(self, ids: Any = None, where: Any = None, where_document: Any = None) -> None:
        """Delete records by ids and/or filters, as ``collection.delete``.

        Raises:
            InvalidInputError: No ids and no filter, or an empty list of ids.
        """
        id_list = maybe_cast_one_to_many(ids)
        if id_list is None and where is None and where_document is None:
            raise InvalidInputError("delete needs ids, where or where_document")
        if id_list is not None and not id_list:
            raise InvalidInputError("delete got an empty list of ids (Chroma refuses it too)")
        self._backend.delete(id_list, where, where_document)

    # ------------------------------------------------------------------ reads

    def _get_records(
        self,
        ids: Any = None,
        where: Any = None,
        limit: int | None = None,
        offset: int | None = None,
        where_document: Any = None,
        include: Sequence[str] = ("metadatas", "documents"),
    ) -> Any:
        """``collection.get`` with the hidden sparse keys removed from the metadata.

        Returns:
            chromadb's ``GetResult``.
        """
        result = self._backend.collection.get(
            ids=ids,
            where=where,
            limit=limit,
            offset=offset,
            where_document=where_document,
            include=list(include),
        )
        if result.get("metadatas") is not None:
            reserved = self._backend.reserved
            result["metadatas"] = [strip_hidden(m, reserved) for m in result["metadatas"]]
        return result

    get = _ReadOrDeprecatedOpen()
    """``collection.get(ids=..., where=...)`` reads records (`_get_records`), as Chroma's.
    (``HybridCollection.get(client, name)`` still opens a collection, deprecated: `open`.)"""

    def count(self) -> int:
        """How many records the collection holds."""
        return int(self._backend.collection.count())

    def search(
        self,
        query: str | Search,
        *,
        limit: int = DEFAULT_SEARCH_LIMIT,
        offset: int = 0,
        where: Where | dict[str, Any] | None = None,
        mode: Mode = "hybrid",
        weights: Sequence[float] | None = None,
        normalize: bool = False,
        k: int = DEFAULT_RRF_K,
        candidate_limit: int = DEFAULT_CANDIDATE_LIMIT,
        sparse_candidate_limit: int | None = None,
        missing_rank: float | Literal["candidate_limit"] | None = "candidate_limit",
        select: Sequence[str | Key] = DEFAULT_SELECT,
    ) -> SearchResults:
        """Search by text (hybrid, dense or sparse), or run a chromadb ``Search``.

        A text query is checked once (`TextSearch`), then becomes the ``Search`` of
        `build_native_search` on Chroma Cloud, and on embedded Chroma the equivalent local
        plan (`plan_from_text`), run with the same semantics (each
        ``Knn`` takes its top ``candidate_limit`` among records passing ``where``, 0-based
        ranks, ``Rrf`` = ``-sum(w / (k + rank))``, lower is better).

        Args:
            query: The query text, or a ``Search`` (then the keyword arguments must stay at
                their defaults: a changed one raises `InvalidInputError`). Locally a ``Search`` may use: one ``Knn``, or one ``Rrf`` over
                ``Knn(return_rank=True)`` legs on ``#embedding`` and the sparse key;
                ``where``; ``limit``/``offset``; ``select``.
            limit: Results to return.
            offset: Ranked results to skip first.
            where: A metadata filter (dict or ``K(...)`` expression), applied to both legs.
            mode: ``"hybrid"``, ``"dense"`` or ``"sparse"``.
            weights: RRF weights ``(dense, sparse)``; 1.0 each by default.
            normalize: Scale the weights to sum to 1.
            k: RRF smoothing constant.
            candidate_limit: Candidates per leg.
            sparse_candidate_limit: The sparse leg's own candidate count, if different.
            missing_rank: Rank given to a record one leg did not return
                (``"candidate_limit"``: just past that leg's list; ``None``: keep only
                records both legs found).
            select: Fields to return: ``"#document"``, ``"#metadata"``, ``"#score"``,
                ``"#embedding"`` or metadata field names.

        Returns:
            The rows, best first.

        Raises:
            InvalidInputError: A bad query or argument.
            UnsupportedSearchError: Locally, a ``Search`` outside the subset; the message
                names what is unsupported.
            EmbeddingError: The query could not be embedded.
        """
        if isinstance(query, Search):
            given = {
                name: value
                for name, value, default in (
                    ("limit", limit, DEFAULT_SEARCH_LIMIT),
                    ("offset", offset, 0),
                    ("where", where, None),
                    ("mode", mode, "hybrid"),
                    ("weights", weights, None),
                    ("normalize", normalize, False),
                    ("k", k, DEFAULT_RRF_K),
                    ("candidate_limit", candidate_limit, DEFAULT_CANDIDATE_LIMIT),
                    ("sparse_candidate_limit", sparse_candidate_limit, None),
                    ("missing_rank", missing_rank, "candidate_limit"),
                    ("select", select, DEFAULT_SELECT),
                )
                if value != default
            }
            if given:
                raise InvalidInputError(
                    f"search() got a Search and also {', '.join(sorted(given))}: put them in "
                    "the Search itself (.where(), .limit(), .select(), the Knn/Rrf arguments)"
                )
            return self._backend.search(query)
        if not isinstance(query, str):
            raise InvalidInputError(
                f"query must be a string or a chromadb Search, got {type(query).__name__}"
            )
        # Checked once, before any request or read; each backend builds its own form of it.
        args = TextSearch.check(
            query,
            sparse_key=self.sparse_key,
            mode=mode,
            limit=limit,
            offset=offset,
            where=where,
            weights=weights,
            normalize=normalize,
            k=k,
            candidate_limit=candidate_limit,
            sparse_candidate_limit=sparse_candidate_limit,
            missing_rank=missing_rank,
            select=select,
        )
        return self._backend.search(args)

    def refresh(self) -> None:
        """Embedded Chroma: rebuild the sparse index from the collection now (normally lazy).

        Records set aside as pending are embedded again; on Chroma Cloud this does nothing.
        """
        self._backend.refresh()

    def pending(self) -> list[PendingRecord]:
        """Records the sparse leg cannot rank: their document could not be embedded.

        Only records written by other code (the raw collection, another process) can be
        pending: a refresh that finds one the service refuses (400, 413 for one text) or
        cannot embed now (unreachable) sets it aside instead of failing every search.
        The dense leg still finds it; `refresh` retries it. Writes through
        HybridCollection raise instead. Empty on Chroma Cloud.

        Returns:
            The pending records with the reason, by id.
        """
        return self._backend.pending()

    def close(self) -> None:
        """Save the sparse index snapshot if it changed (PersistentClient), and release what
        change detection holds (a read-only sqlite connection)."""
        self._backend.close()

    def __repr__(self) -> str:
        return (
            f"HybridCollection(name={self.name!r}, backend={self.backend!r}, "
            f"sparse_key={self.sparse_key!r})"
        )

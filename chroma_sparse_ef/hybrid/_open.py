"""Opening a hybrid collection: which backend, and whether the stored layout fits.

Which backend a collection gets (``backend="auto"``):

- An existing collection keeps the layout it was created with: a schema with an enabled
  sparse vector index means native; the hybrid layout in its metadata means local.
- A new one on an embedded client (``EphemeralClient``, ``PersistentClient``) is local; on
  Chroma Cloud (host ``*.trychroma.com``) it is native. On any other HTTP server it is
  created natively, and falls back to local when the server answers "Sparse vector indexing
  is not enabled in local" (single-node Chroma).

``backend="native"`` or ``"local"`` forces one. An existing collection opened with a
sparse function is checked against the stored one: same registered name and same vector
space (the function's own `validate_config_update`).

BM25 (``bm25=None``: on for chromadb's ``ChromaBm25EmbeddingFunction``, off otherwise) is
part of the layout: the schema's ``SparseVectorIndexConfig(bm25=True)`` on Cloud, the stored
layout's ``"bm25"`` on embedded Chroma. Reopening restores it; an explicit other value is a
`ConfigurationError`.
"""

from __future__ import annotations

from typing import Any, Literal

from chromadb.api.types import SparseEmbeddingFunction
from chromadb.errors import NotFoundError

from .._chroma_compat import is_embedded_client, is_local_sparse_refusal
from .._exceptions import ConfigurationError
from .._sparse_checks import check_sparse_key
from ._backend import HybridBackend
from ._cloud import NativeBackend, build_schema, find_sparse_index
from ._local import LocalBackend, shared_backend
from ._stored import (
    CONFIG_METADATA_KEY,
    HybridLayoutError,
    StoredConfig,
    default_bm25,
    rebuild_sparse_function,
)
from ._watch import SqliteWatermark

__all__ = ["DEFAULT_SPARSE_KEY", "Backend", "create_or_open", "open_backend", "open_existing"]

#: The key chromadb's docs use for a collection's sparse embeddings.
DEFAULT_SPARSE_KEY = "sparse_embedding"

Backend = Literal["auto", "native", "local"]

_CLOUD_HOST_SUFFIX = "trychroma.com"


def create_or_open(
    client: Any,
    name: str,
    *,
    sparse_embedding_function: SparseEmbeddingFunction[Any],
    embedding_function: Any,
    sparse_key: str,
    metadata: dict[str, Any] | None,
    backend: Backend,
    bm25: bool | None = None,
) -> HybridBackend:
    """The backend of collection ``name``, created if missing (`HybridCollection.get_or_create`)."""
    _check_backend(backend)
    if bm25 is not None and not isinstance(bm25, bool):
        raise ConfigurationError(f"bm25 must be True, False or None, got {bm25!r}")
    if not isinstance(sparse_embedding_function, SparseEmbeddingFunction):
        raise ConfigurationError(
            "sparse_embedding_function must be a chromadb SparseEmbeddingFunction, got "
            f"{type(sparse_embedding_function).__name__}"
        )
    check_sparse_key(sparse_key, reserved=(CONFIG_METADATA_KEY,), error=ConfigurationError)
    if metadata is not None and CONFIG_METADATA_KEY in metadata:
        raise ConfigurationError(f"Collection metadata key {CONFIG_METADATA_KEY!r} is reserved")
    dense = {} if embedding_function is None else {"embedding_function": embedding_function}
    try:
        existing = client.get_collection(name, **dense)
    except (NotFoundError, ValueError):
        existing = None
    if existing is not None:
        opened = open_backend(client, existing, sparse_embedding_function, backend)
        if opened.sparse_key != sparse_key:
            raise ConfigurationError(
                f"Collection {name!r} keeps sparse vectors under {opened.sparse_key!r}, "
                f"not {sparse_key!r}"
            )
        if bm25 is not None and bm25 != opened.bm25:
            raise ConfigurationError(
                f"Collection {name!r} was created with bm25={opened.bm25}, not bm25={bm25}: "
                "IDF is part of how its sparse index ranks; open it without bm25= (or with "
                f"bm25={opened.bm25}), or create a new collection"
            )
        return opened

    use_bm25 = default_bm25(_function_name(sparse_embedding_function)) if bm25 is None else bm25
    choice = _choose_backend(client, backend)
    if choice != "local":
        try:
            collection = client.get_or_create_collection(
                name,
                schema=build_schema(sparse_embedding_function, sparse_key, bm25=use_bm25),
                metadata=metadata,
                **dense,
            )
            return open_backend(client, collection, sparse_embedding_function, "native")
        except Exception as exc:
            if choice == "native" or not is_local_sparse_refusal(exc):
                raise
    stored = StoredConfig.of(sparse_embedding_function, sparse_key, bm25=use_bm25)
    collection = client.get_or_create_collection(
        name, metadata={**(metadata or {}), CONFIG_METADATA_KEY: stored.to_json()}, **dense
    )
    return open_backend(client, collection, sparse_embedding_function, "local")


def open_existing(
    client: Any,
    name: str,
    *,
    embedding_function: Any,
    sparse_embedding_function: SparseEmbeddingFunction[Any] | None,
    backend: Backend,
) -> HybridBackend:
    """The backend of the existing collection ``name`` (`HybridCollection.open`)."""
    _check_backend(backend)
    dense = {} if embedding_function is None else {"embedding_function": embedding_function}
    collection = client.get_collection(name, **dense)
    return open_backend(client, collection, sparse_embedding_function, backend)


def open_backend(
    client: Any,
    collection: Any,
    sparse_function: SparseEmbeddingFunction[Any] | None,
    backend: Backend,
) -> HybridBackend:
    """The backend for a chromadb collection, after checking its stored layout."""
    max_batch = int(client.get_max_batch_size())
    native = find_sparse_index(collection.schema) if backend != "local" else None
    stored = StoredConfig.from_metadata(collection.metadata)
    if native is not None and (backend == "native" or stored is None):
        key, config = native
        schema_function = config.embedding_function
        if schema_function is None:
            raise HybridLayoutError(
                f"Collection {collection.name!r} has a sparse index on {key!r} whose "
                "embedding function chromadb could not rebuild: import the package that "
                "provides it (for chroma_sparse_ef: `import chroma_sparse_ef`) before "
                "opening the collection"
            )
        _check_same_function(collection.name, schema_function, sparse_function)
        return NativeBackend(
            collection, schema_function, key, max_batch_size=max_batch, bm25=bool(config.bm25)
        )
    if backend == "native":
        raise HybridLayoutError(
            f"Collection {collection.name!r} has no sparse vector index in its schema"
        )
    if stored is None:
        raise HybridLayoutError(
            f"Collection {collection.name!r} is not a hybrid collection (no "
            f"{CONFIG_METADATA_KEY!r} in its metadata); create one with "
            "HybridCollection.get_or_create"
        )
    if sparse_function is None:
        sparse_function = rebuild_sparse_function(stored.name, stored.config)
    else:
        _check_same_name(collection.name, stored.name, sparse_function)
        _check_same_space(collection.name, stored.config, sparse_function)
    watermark = SqliteWatermark.open(client, str(collection.id))
    if watermark is None:
        return shared_backend(
            collection,
            sparse_function,
            stored.sparse_key,
            max_batch_size=max_batch,
            bm25=stored.uses_bm25,
        )
    return LocalBackend(
        collection,
        sparse_function,
        stored.sparse_key,
        max_batch_size=max_batch,
        watermark=watermark,
        bm25=stored.uses_bm25,
    )


def _function_name(function: Any) -> str | None:
    try:
        return str(function.name())
    except (AttributeError, NotImplementedError):
        return None


def _check_backend(backend: object) -> None:
    if backend not in ("auto", "native", "local"):
        raise ConfigurationError(f"backend must be 'auto', 'native' or 'local', got {backend!r}")


def _choose_backend(client: Any, backend: Backend) -> Literal["native", "local", "probe"]:
    if backend != "auto":
        return backend
    if is_embedded_client(client):
        return "local"
    if str(client.get_settings().chroma_server_host or "").endswith(_CLOUD_HOST_SUFFIX):
        return "native"
    return "probe"


def _check_same_name(collection: str, stored_name: str, function: Any) -> None:
    name = function.name() if hasattr(function, "name") else None
    if name != stored_name:
        raise ConfigurationError(
            f"Collection {collection!r} was created with the sparse function {stored_name!r}; "
            f"vectors from {name!r} would not be comparable"
        )


def _check_same_function(collection: str, stored: Any, given: Any) -> None:
    if given is not None:
        _check_same_name(collection, stored.name(), given)
        _check_same_space(collection, stored.get_config(), given)


def _check_same_space(collection: str, stored_config: dict[str, Any], given: Any) -> None:
    """Refuse a function of the same name whose settings put vectors in another space.

    Every hosted model shares the name ``chroma_sparse_ef``, so the name alone cannot tell
    SPLADE from BGE-M3: the function's own `validate_config_update` knows which settings
    (model, query model, task, instructions) change the space.
    """
    if not hasattr(given, "validate_config_update") or not hasattr(given, "get_config"):
        return
    try:
        given.validate_config_update(stored_config, given.get_config())
    except ValueError as exc:
        raise HybridLayoutError(
            f"Collection {collection!r} holds vectors from a differently configured sparse "
            f"function: {exc}"
        ) from exc

"""What HybridCollection stores in embedded Chroma, and how it finds the sparse function again.

Embedded Chroma cannot hold a sparse index in its schema, so the hybrid layout lives in
metadata:

- The collection's metadata holds, under `CONFIG_METADATA_KEY`, a JSON string
  ``{"format": 1, "sparse_key": ..., "name": ..., "config": {...}, "bm25": false}``: the
  sparse embedding function's registered name and its ``get_config()`` (never an API key:
  the package's functions store only the name of the environment variable that holds it),
  and whether the sparse leg ranks with Chroma Cloud's BM25 IDF. A layout with
  ``"bm25": true`` is format 2, so a package too old to apply IDF refuses it instead of
  ranking it differently; a layout written before the flag existed has no ``"bm25"`` and
  gets the default (`default_bm25`).
- Each record's metadata holds its encoded sparse vector (`_codec`, ``"spv1:..."``) under
  the sparse key, and a short hash of the document the vector was computed from under
  `doc_hash_key` (``"<sparse_key>__doc"``). The hash is how a document changed by other code
  is told apart from one we embedded.
- A record whose document the service refused during a background refresh (written by
  other code) holds, under `pending_key` (``"<sparse_key>__pending"``), the hash of that
  document and the reason: ``"<hash> <reason>"``. It has no sparse vector until a later
  refresh embeds it (`_coherence`).

The three record keys are reserved: user metadata may not use them, and `strip_hidden` removes
them from everything HybridCollection returns.

On Chroma Cloud none of this is used: the schema holds the function (``SparseVectorIndexConfig``)
and Chroma rebuilds it by name through the same registry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chromadb.api.types import SparseEmbeddingFunction
from chromadb.utils.embedding_functions import sparse_known_embedding_functions

from .._exceptions import ConfigurationError, HybridLayoutError, InvalidInputError

__all__ = [
    "CONFIG_METADATA_KEY",
    "FORMAT_VERSION",
    "HybridLayoutError",
    "StoredConfig",
    "check_user_metadatas",
    "default_bm25",
    "doc_hash_key",
    "document_hash",
    "hidden_keys",
    "pending_key",
    "rebuild_sparse_function",
    "strip_hidden",
]

#: Collection-metadata key of the hybrid layout. Persisted in users' collections: never rename.
CONFIG_METADATA_KEY = "chroma_sparse_ef_hybrid"
#: Version of the layout; a reader refuses a newer one instead of misreading it. Format 2
#: is format 1 with ``"bm25": true`` (query-time IDF), which format-1 readers cannot apply.
FORMAT_VERSION = 2
#: Registered name of chromadb's `ChromaBm25EmbeddingFunction`: its vectors are saturated
#: term frequencies that Chroma Cloud ranks with IDF only when the index has ``bm25=True``.
BM25_FUNCTION_NAME = "chroma_bm25"
#: 8 bytes of BLAKE2b: a changed document goes unnoticed with probability 2**-64.
_HASH_BYTES = 8


@dataclass(frozen=True, slots=True)
class StoredConfig:
    """The hybrid layout recorded in an embedded collection's metadata.

    Attributes:
        name: The sparse embedding function's registered name.
        config: Its ``get_config()``.
        sparse_key: The record-metadata key holding encoded sparse vectors.
        format: The layout version.
        bm25: Whether the sparse leg scales query weights by Chroma Cloud's BM25 IDF;
            ``None`` in a layout written before the flag existed.
    """

    name: str
    config: dict[str, Any]
    sparse_key: str
    format: int = 1
    bm25: bool | None = None

    @property
    def uses_bm25(self) -> bool:
        """The flag, or for a layout without one, the default for its function."""
        return default_bm25(self.name) if self.bm25 is None else self.bm25

    @classmethod
    def of(
        cls, function: SparseEmbeddingFunction[Any], sparse_key: str, *, bm25: bool = False
    ) -> StoredConfig:
        """Describe ``function`` for storage.

        Raises:
            ConfigurationError: The function has no registered name or config.
        """
        try:
            name = function.name()
            config = function.get_config()
        except (AttributeError, NotImplementedError) as exc:
            raise ConfigurationError(
                f"{type(function).__name__} cannot be stored with the collection: a sparse "
                "embedding function needs name() and get_config() (chromadb's protocol)"
            ) from exc
        return cls(
            name=name,
            config=dict(config),
            sparse_key=sparse_key,
            format=2 if bm25 else 1,
            bm25=bool(bm25),
        )

    def to_json(self) -> str:
        """The JSON string stored under `CONFIG_METADATA_KEY`."""
        data: dict[str, Any] = {
            "format": self.format,
            "sparse_key": self.sparse_key,
            "name": self.name,
            "config": self.config,
        }
        if self.bm25 is not None:
            data["bm25"] = self.bm25
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> StoredConfig | None:
        """Read the layout from collection metadata; ``None`` if it holds none.

        Raises:
            HybridLayoutError: The stored value is malformed or from a newer version.
        """
        raw = (metadata or {}).get(CONFIG_METADATA_KEY)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            version = int(data["format"])
            bm25 = data.get("bm25")
            if bm25 is not None and not isinstance(bm25, bool):
                raise TypeError(f"bm25 must be true or false, got {bm25!r}")
            stored = cls(
                name=str(data["name"]),
                config=dict(data["config"]),
                sparse_key=str(data["sparse_key"]),
                format=version,
                bm25=bm25,
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise HybridLayoutError(
                f"The collection's {CONFIG_METADATA_KEY!r} metadata is malformed: {raw!r}"
            ) from exc
        if version > FORMAT_VERSION:
            raise HybridLayoutError(
                f"The collection was written by a newer chroma-sparse-ef (layout format "
                f"{version}, this one reads up to {FORMAT_VERSION}): upgrade the package"
            )
        return stored


def rebuild_sparse_function(name: str, config: Mapping[str, Any]) -> SparseEmbeddingFunction[Any]:
    """Rebuild a sparse embedding function by name through chromadb's sparse registry.

    Args:
        name: The registered name, e.g. ``"chroma_sparse_ef"``.
        config: What its ``get_config()`` returned.

    Returns:
        The function, as ``build_from_config`` builds it.

    Raises:
        HybridLayoutError: No function is registered under ``name`` (its package is not
            imported), or it refuses the config.
    """
    cls = sparse_known_embedding_functions.get(name)
    if cls is None:
        raise HybridLayoutError(
            f"The collection's sparse embedding function {name!r} is not registered with "
            f"chromadb. Import the package that provides it first (for {name!r} from this "
            "project: `import chroma_sparse_ef`), or pass sparse_embedding_function=..."
        )
    try:
        function: SparseEmbeddingFunction[Any] = cls.build_from_config(dict(config))
    except Exception as exc:
        raise HybridLayoutError(
            f"The sparse embedding function {name!r} could not be rebuilt from the "
            f"collection's stored config ({exc}); pass sparse_embedding_function=..."
        ) from exc
    return function


def default_bm25(function_name: str | None) -> bool:
    """``bm25=None`` means on for chromadb's BM25 function (``chroma_bm25``), off otherwise.

    Learned sparse models (SPLADE, BGE-M3) weight terms themselves; BM25 vectors carry only
    saturated term frequencies and need the index's IDF, as on Chroma Cloud.
    """
    return function_name == BM25_FUNCTION_NAME


def doc_hash_key(sparse_key: str) -> str:
    """The record-metadata key holding the hash of the document a vector came from."""
    return f"{sparse_key}__doc"


def pending_key(sparse_key: str) -> str:
    """The record-metadata key marking a record whose document could not be embedded."""
    return f"{sparse_key}__pending"


def hidden_keys(sparse_key: str) -> tuple[str, str, str]:
    """Every record-metadata key HybridCollection reserves on embedded Chroma."""
    return (sparse_key, doc_hash_key(sparse_key), pending_key(sparse_key))


def document_hash(document: str) -> str:
    """A short, stable hash of a document (16 hex characters)."""
    return hashlib.blake2b(document.encode("utf-8"), digest_size=_HASH_BYTES).hexdigest()


def check_user_metadatas(
    metadatas: list[Mapping[str, Any] | None] | None, reserved: tuple[str, ...]
) -> None:
    """Refuse user metadata that uses a reserved key.

    Raises:
        InvalidInputError: A metadata dict holds one of ``reserved``.
    """
    if metadatas is None:
        return
    for position, metadata in enumerate(metadatas):
        if metadata is None:
            continue
        for key in reserved:
            if key in metadata:
                raise InvalidInputError(
                    f"metadatas[{position}] uses the key {key!r}, which this hybrid "
                    "collection reserves for sparse vectors; rename the field"
                )


def strip_hidden(
    metadata: Mapping[str, Any] | None, reserved: tuple[str, ...]
) -> dict[str, Any] | None:
    """A copy of ``metadata`` without the reserved keys; ``None`` if nothing else is left."""
    if metadata is None:
        return None
    cleaned = {key: value for key, value in metadata.items() if key not in reserved}
    return cleaned or None

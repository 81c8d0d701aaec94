"""Every use of chromadb internals, in one place, each pinned by a contract test.

The package needs a few things chromadb does not promise (private methods and attributes,
the sqlite layout of a PersistentClient, the text of an error). They live here, and only
here, so a chromadb upgrade has one module to re-check: `tests/unit/test_chroma_compat.py`
has one contract test per item, whose failure says what changed and what to look at.
Checked on chromadb 1.5.9; ``pyproject.toml`` pins ``chromadb<1.6`` until they pass on the
next minor.

What is here, and who uses it:

- `embed_like_add`: ``Collection._embed``, the dense embedding ``add`` would compute
  (`hybrid._ingest`).
- `system_identity`: ``Collection._client``, which chromadb system a handle belongs to
  (`hybrid._local.shared_backend`).
- `trusted_sparse_vector`: a ``SparseVector`` built without re-running its
  ``__post_init__`` checks (`_protocol`, after checking the same rules faster).
- `is_embedded_client`, `sqlite_path` and the ``SQL_*`` / ``OP_*`` constants: Chroma's
  sqlite file and schema (`hybrid._open`, `hybrid._watch`).
- `is_local_sparse_refusal`: the error text single-node Chroma answers a sparse index with
  (`hybrid._open`).
- `default_onnx_model`: where ``ONNXMiniLM_L6_V2`` downloads from and caches to (`_dense`).
- `stored_embedding_function`: the dense function a collection's configuration keeps
  (`_demo`).
- `cloud_api_key_from_clients`: the key of a ``CloudClient`` already open (`_config`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from chromadb.base_types import SparseVector

__all__ = [
    "CHROMADB_VERIFIED",
    "EMBEDDED_API_IMPLS",
    "LOCAL_SPARSE_REFUSAL",
    "OP_DELETE",
    "OP_KNOWN",
    "SQLITE_FILE",
    "SQL_ALL_IDS",
    "SQL_LOG_HAS",
    "SQL_LOG_RANGE",
    "SQL_METADATA_SEGMENT",
    "SQL_SEQ_ID",
    "SQL_SEQ_TYPE",
    "SQL_TOUCHED_SINCE",
    "OnnxModel",
    "cloud_api_key_from_clients",
    "default_onnx_model",
    "embed_like_add",
    "is_embedded_client",
    "is_local_sparse_refusal",
    "log_topic_pattern",
    "sqlite_path",
    "stored_embedding_function",
    "system_identity",
    "trusted_sparse_vector",
]

#: The chromadb release every contract below was checked on.
CHROMADB_VERIFIED: Final = "1.5.9"


# --- collections -------------------------------------------------------------------------


def embed_like_add(collection: Any, texts: list[str]) -> Any:
    """Dense embeddings of ``texts`` exactly as ``collection.add(documents=texts)`` makes them.

    ``CollectionCommon._embed`` picks the function passed to the handle, else the one in
    the collection's configuration or schema, else Chroma's default: the rule a copy here
    would drift from.
    """
    return collection._embed(input=texts, is_query=False)


def system_identity(collection: Any) -> int:
    """Which chromadb system (one per client settings, shared by its handles) holds ``collection``.

    Handles from clients of the same settings share the system; the identity is only
    meaningful while a handle keeps that system alive.
    """
    return id(collection._client)


def stored_embedding_function(collection: Any) -> Any:
    """The dense function chromadb rebuilt from the collection's configuration, or None."""
    return collection.configuration.get("embedding_function")


def trusted_sparse_vector(
    indices: list[int], values: list[float], labels: list[str] | None
) -> SparseVector:
    """A ``SparseVector`` from lists the caller has already checked, skipping ``__post_init__``.

    Its per-element Python loops cost ~27 us for 200 nonzeros, more than all the rest of
    parsing a response; `_protocol` checks the same rules (`_sparse_checks`) beforehand.
    Only for lists of ``int`` indices in ``[0, 2**32)``, strictly ascending, and as many
    ``float`` values (and ``str`` labels).
    """
    vector: SparseVector = object.__new__(SparseVector)
    vector.indices = indices
    vector.values = values
    vector.labels = labels
    return vector


# --- which server, and the refusal of sparse indexes -------------------------------------

#: ``Settings.chroma_api_impl`` suffixes of the in-process (embedded) clients.
EMBEDDED_API_IMPLS: Final = ("RustBindingsAPI", "SegmentAPI")
#: What single-node Chroma (embedded or ``chroma run``) answers a schema with a sparse
#: vector index: "Sparse vector indexing is not enabled in local".
LOCAL_SPARSE_REFUSAL: Final = "not enabled in local"


def is_embedded_client(client: Any) -> bool:
    """Whether ``client`` runs Chroma in this process (EphemeralClient, PersistentClient)."""
    return str(client.get_settings().chroma_api_impl).endswith(EMBEDDED_API_IMPLS)


def is_local_sparse_refusal(error: BaseException) -> bool:
    """Whether ``error`` is single-node Chroma refusing a sparse vector index."""
    return LOCAL_SPARSE_REFUSAL in str(error)


# --- the sqlite file of a PersistentClient -----------------------------------------------

#: The file a PersistentClient keeps in its ``persist_directory``.
SQLITE_FILE: Final = "chroma.sqlite3"
#: The collection's METADATA segment (the one whose ``max_seq_id`` moves with every write).
SQL_METADATA_SEGMENT: Final = "SELECT id FROM segments WHERE scope = 'METADATA' AND collection = ?"
#: The last log sequence number a segment applied: the watermark.
SQL_SEQ_ID: Final = "SELECT seq_id FROM max_seq_id WHERE segment_id = ?"
#: Whether the log still holds one collection's write at a sequence number. Chroma purges
#: each collection's log separately, a prefix at a time (``rust/log/src/sqlite_log.rs``,
#: ``purge_logs``: ``DELETE ... WHERE topic = ? AND seq_id < ?``), so a collection's history
#: after its own write at ``since`` is whole exactly when that row is still there. (The
#: oldest row of the whole log says nothing: another collection may keep older rows.)
SQL_LOG_HAS: Final = "SELECT 1 FROM embeddings_queue WHERE seq_id = ? AND topic LIKE ?"
#: The log's writes in ``(since, until]`` to topics matching `log_topic_pattern`.
SQL_LOG_RANGE: Final = (
    "SELECT seq_id, operation, id FROM embeddings_queue "
    "WHERE seq_id > ? AND seq_id <= ? AND topic LIKE ? ORDER BY seq_id"
)
#: How the records' ``seq_id`` is stored (``integer`` on 1.5.x; bytes in older layouts).
SQL_SEQ_TYPE: Final = "SELECT typeof(seq_id) FROM embeddings WHERE segment_id = ? LIMIT 1"
#: Records of a segment whose last write is after a watermark.
SQL_TOUCHED_SINCE: Final = "SELECT embedding_id FROM embeddings WHERE segment_id = ? AND seq_id > ?"
#: Every record id of a segment.
SQL_ALL_IDS: Final = "SELECT embedding_id FROM embeddings WHERE segment_id = ?"
#: How many records a segment holds (~10 ms at 100k, against ~200 ms for ``count()``).
SQL_COUNT: Final = "SELECT COUNT(*) FROM embeddings WHERE segment_id = ?"
#: ``embeddings_queue.operation`` for a delete (``chromadb.proto`` Operation: ADD 0,
#: UPDATE 1, UPSERT 2, DELETE 3).
OP_DELETE: Final = 3
#: Every operation code the log holds.
OP_KNOWN: Final = frozenset({0, 1, 2, 3})


def sqlite_path(client: Any) -> str | None:
    """The sqlite file of a persistent embedded client, or None for any other client.

    The file may not exist yet (a client that never wrote); the caller checks.
    """
    settings = client.get_settings()
    if not settings.is_persistent or not is_embedded_client(client):
        return None
    return os.path.join(str(settings.persist_directory), SQLITE_FILE)


def log_topic_pattern(collection_id: str) -> str:
    """A ``LIKE`` pattern for the log topic of a collection.

    Topics are ``persistent://<tenant>/<database>/<collection id>`` where tenant and
    database are not the client's names, so only the id at the end is matched. A uuid
    holds no ``LIKE`` wildcard.
    """
    return f"%/{collection_id}"


# --- Chroma's default dense model ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnnxModel:
    """Where chromadb's default dense model (all-MiniLM-L6-v2, ONNX) comes from and goes.

    Attributes:
        url: The archive chromadb downloads.
        sha256: The archive's SHA-256 as chromadb checks it.
        archive_folder: The folder inside the archive, and under `download_path`.
        download_path: chromadb's cache for the model.
    """

    url: str
    sha256: str
    archive_folder: str
    download_path: Path

    @property
    def model_dir(self) -> Path:
        """Where the extracted files are, and where chromadb looks for them."""
        return self.download_path / self.archive_folder


def default_onnx_model() -> OnnxModel:
    """``ONNXMiniLM_L6_V2``'s download settings, read now (tests point them elsewhere)."""
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2 as Onnx

    return OnnxModel(
        url=str(Onnx.MODEL_DOWNLOAD_URL),
        sha256=str(Onnx._MODEL_SHA256),
        archive_folder=str(Onnx.EXTRACTED_FOLDER_NAME),
        download_path=Path(str(Onnx.DOWNLOAD_PATH)),
    )


# --- credentials ---------------------------------------------------------------------------


def cloud_api_key_from_clients() -> str | None:
    """The API key of a Chroma Cloud client open in this process, as chromadb finds it."""
    from chromadb.api.shared_system_client import SharedSystemClient

    found: str | None = SharedSystemClient.get_chroma_cloud_api_key_from_clients()
    return found or None

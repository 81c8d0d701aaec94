"""Contract tests: what `_chroma_compat` assumes about chromadb internals still holds.

One test per internal, on real chromadb objects. When one fails after a chromadb upgrade,
its message says what changed; its docstring says what to re-check in chromadb's source
before fixing `_chroma_compat` (and only it). The package pins ``chromadb<1.6``: before
moving the pin, run this file against the new release.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.api.types import Schema, SparseVectorIndexConfig
from chromadb.base_types import SparseVector
from chromadb.errors import ChromaError
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

from chroma_sparse_ef import _chroma_compat as compat
from chroma_sparse_ef._dense import CHROMA_DEFAULT_MODEL_FILES, chroma_default_model_dir
from chroma_sparse_ef._hashing import HASHING_FUNCTION_NAME, HashingEmbeddingFunction


def _name() -> str:
    return f"compat-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def persistent(tmp_path: Path) -> Iterator[Any]:
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    yield client
    client.clear_system_cache()


def _readonly(client: Any) -> sqlite3.Connection:
    path = compat.sqlite_path(client)
    assert path is not None, "a PersistentClient has no sqlite path: re-check `sqlite_path`"
    assert Path(path).is_file(), (
        f"no {compat.SQLITE_FILE} in the PersistentClient's persist_directory ({path}): "
        "chromadb moved or renamed its sqlite file; re-check chromadb/config.py and the "
        "sqlite db impl, then `sqlite_path`"
    )
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def test_embed_like_add_gives_the_vectors_add_stores() -> None:
    """``Collection._embed(input=, is_query=False)`` computes what ``add`` stores.

    Re-check on upgrade: ``CollectionCommon._embed`` (chromadb/api/models/CollectionCommon.py)
    still exists with this signature and is what ``_validate_and_prepare_add_request`` calls.
    """
    collection = chromadb.EphemeralClient().create_collection(
        _name(), embedding_function=HashingEmbeddingFunction()
    )
    texts = ["sparse vectors for hybrid search", "dense leg"]
    try:
        ours = compat.embed_like_add(collection, texts)
    except (AttributeError, TypeError) as exc:
        pytest.fail(f"Collection._embed(input=..., is_query=False) is gone or changed: {exc!r}")
    collection.add(ids=["a", "b"], documents=texts)
    stored = collection.get(ids=["a", "b"], include=["embeddings"])["embeddings"]
    assert np.allclose(np.asarray(ours), np.asarray(stored)), (
        "Collection._embed no longer computes what add() stores: find the method add() uses "
        "to embed documents and call it from embed_like_add"
    )


def test_embed_like_add_uses_the_stored_function_on_a_handle_without_one(
    persistent: Any,
) -> None:
    """A handle opened without a function embeds with the one the collection was created with.

    Re-check on upgrade: ``CollectionCommon._embed`` falls back to
    ``configuration["embedding_function"]`` before Chroma's default.
    """
    name = _name()
    created = persistent.create_collection(name, embedding_function=HashingEmbeddingFunction())
    reopened = persistent.get_collection(name)
    texts = ["a b c"]
    assert np.allclose(
        np.asarray(compat.embed_like_add(reopened, texts)),
        np.asarray(compat.embed_like_add(created, texts)),
    ), "Collection._embed on a reopened handle no longer uses the stored embedding function"


def test_stored_embedding_function_is_rebuilt_from_the_configuration(persistent: Any) -> None:
    """``collection.configuration["embedding_function"]`` is the rebuilt dense function.

    Re-check on upgrade: ``CollectionConfiguration`` (chromadb/api/collection_configuration.py)
    still has an ``embedding_function`` entry built from the registered function's name.
    """
    name = _name()
    persistent.create_collection(name, embedding_function=HashingEmbeddingFunction())
    function = compat.stored_embedding_function(persistent.get_collection(name))
    assert function is not None, 'configuration has no "embedding_function" any more'
    assert function.name() == HASHING_FUNCTION_NAME


def test_system_identity_is_shared_by_handles_of_one_system(tmp_path: Path) -> None:
    """Handles of one chromadb system share ``Collection._client``; other systems do not.

    Re-check on upgrade: ``CollectionCommon._client`` is still the server API object, one
    per ``SharedSystemClient`` system (clients with equal settings share it).
    """
    first, second = chromadb.EphemeralClient(), chromadb.EphemeralClient()
    name = _name()
    a = first.create_collection(name)
    b = second.get_collection(name)
    try:
        same = compat.system_identity(a) == compat.system_identity(b)
    except AttributeError as exc:
        pytest.fail(f"Collection._client is gone: {exc!r}; find what a handle keeps its system in")
    assert same, "two handles of one EphemeralClient system no longer share Collection._client"
    other = chromadb.PersistentClient(path=str(tmp_path / "other"))
    try:
        elsewhere = other.create_collection(name)
        assert compat.system_identity(elsewhere) != compat.system_identity(a)
    finally:
        other.clear_system_cache()


def test_trusted_sparse_vector_equals_a_checked_one() -> None:
    """A vector built without ``__post_init__`` is the one ``SparseVector(...)`` builds.

    Re-check on upgrade: ``SparseVector`` (chromadb/base_types.py) is still a dataclass of
    exactly ``indices``, ``values``, ``labels``; a new field must be set in
    `trusted_sparse_vector` (or the trick dropped).
    """
    fields = [f.name for f in dataclasses.fields(SparseVector)]
    assert fields == ["indices", "values", "labels"], (
        f"SparseVector's fields are now {fields}: update trusted_sparse_vector"
    )
    for labels in (None, ["a", "b"]):
        trusted = compat.trusted_sparse_vector([1, 7], [0.5, 2.0], labels)
        assert trusted == SparseVector(indices=[1, 7], values=[0.5, 2.0], labels=labels)
        assert type(trusted) is SparseVector


def test_embedded_clients_are_recognised_by_their_api_impl(persistent: Any) -> None:
    """Embedded clients report a ``chroma_api_impl`` ending in one of `EMBEDDED_API_IMPLS`.

    Re-check on upgrade: ``Settings.chroma_api_impl`` of ``EphemeralClient`` and
    ``PersistentClient`` (chromadb/__init__.py); an HTTP client's is ``...FastAPI``.
    """
    for client in (chromadb.EphemeralClient(), persistent):
        impl = str(client.get_settings().chroma_api_impl)
        assert compat.is_embedded_client(client), (
            f"embedded client with chroma_api_impl={impl!r} not recognised: "
            "update EMBEDDED_API_IMPLS"
        )
    http = chromadb.config.Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI")
    assert not str(http.chroma_api_impl).endswith(compat.EMBEDDED_API_IMPLS)


def test_single_node_chroma_refuses_a_sparse_index_with_the_known_text() -> None:
    """Single-node Chroma refuses a sparse vector index with "... not enabled in local".

    Embedded Chroma runs the same Rust frontend as ``chroma run``. Re-check on upgrade:
    the refusal text in rust/ (schema reconciliation); if local Chroma starts accepting
    sparse indexes, ``backend="auto"`` can create them natively there too.
    """
    schema = Schema()
    schema.create_index(
        config=SparseVectorIndexConfig(
            source_key="#document", embedding_function=ChromaBm25EmbeddingFunction()
        ),
        key="sparse_embedding",
    )
    with pytest.raises(ChromaError) as info:
        chromadb.EphemeralClient().create_collection(_name(), schema=schema)
    assert compat.is_local_sparse_refusal(info.value), (
        f"local Chroma's refusal no longer contains {compat.LOCAL_SPARSE_REFUSAL!r}: "
        f"{info.value!r}; update LOCAL_SPARSE_REFUSAL"
    )
    assert not compat.is_local_sparse_refusal(ValueError("some other failure"))


def test_sqlite_path_only_for_a_persistent_embedded_client(persistent: Any) -> None:
    """``<persist_directory>/chroma.sqlite3`` for a PersistentClient; None when in memory.

    Re-check on upgrade: ``Settings.is_persistent``/``persist_directory`` and the sqlite
    file name (chromadb/db/impl/sqlite.py).
    """
    assert compat.sqlite_path(chromadb.EphemeralClient()) is None
    persistent.create_collection(_name())
    _readonly(persistent).close()


def test_sqlite_schema_has_the_tables_and_columns_read(persistent: Any) -> None:
    """The tables and columns the ``SQL_*`` queries read exist, and every query runs.

    Re-check on upgrade: chromadb/migrations/ (sysdb, embeddings_queue, metadb).
    """
    persistent.create_collection(_name()).add(ids=["a"], embeddings=[[1.0, 2.0]])
    expected = {
        "segments": {"id", "scope", "collection"},
        "max_seq_id": {"segment_id", "seq_id"},
        "embeddings_queue": {"seq_id", "operation", "topic", "id"},
        "embeddings": {"segment_id", "embedding_id", "seq_id"},
    }
    with _readonly(persistent) as db:
        for table, columns in expected.items():
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            assert columns <= have, (
                f"chroma.sqlite3 table {table!r} lacks {sorted(columns - have)}: the schema "
                "changed; update the SQL_* constants and re-check hybrid/_watch.py"
            )
        queries = [
            (compat.SQL_METADATA_SEGMENT, ("x",)),
            (compat.SQL_SEQ_ID, ("x",)),
            (compat.SQL_LOG_HAS, (1, "%/x")),
            (compat.SQL_LOG_RANGE, (0, 1, "%/x")),
            (compat.SQL_SEQ_TYPE, ("x",)),
            (compat.SQL_TOUCHED_SINCE, ("x", 0)),
            (compat.SQL_ALL_IDS, ("x",)),
            (compat.SQL_COUNT, ("x",)),
        ]
        for sql, params in queries:
            db.execute(sql, params).fetchall()


def test_the_watermark_and_log_follow_every_write(persistent: Any) -> None:
    """The METADATA segment's ``max_seq_id`` moves by one per record written, and the log
    holds each write with chromadb's operation code under the collection's topic.

    Re-check on upgrade: the operation codes (``chromadb.proto`` Operation: ADD 0, UPDATE 1,
    UPSERT 2, DELETE 3), the topic format, and that the log is not purged while small.
    """
    collection = persistent.create_collection(_name())
    bystander = persistent.create_collection(_name())
    collection.add(ids=["a", "b"], embeddings=[[1.0, 2.0], [3.0, 4.0]])
    collection.update(ids=["a"], embeddings=[[1.0, 3.0]])
    collection.upsert(ids=["c"], embeddings=[[1.0, 5.0]])
    collection.delete(ids=["b"])
    with _readonly(persistent) as db:
        row = db.execute(compat.SQL_METADATA_SEGMENT, (str(collection.id),)).fetchone()
        assert row is not None, "no METADATA segment row for the collection in `segments`"
        segment = row[0]
        before = db.execute(compat.SQL_SEQ_ID, (segment,)).fetchone()[0]
        bystander.add(ids=["z"], embeddings=[[0.0, 1.0]])
        assert db.execute(compat.SQL_SEQ_ID, (segment,)).fetchone()[0] == before, (
            "another collection's write moved this collection's max_seq_id"
        )
        collection.add(ids=["d"], embeddings=[[2.0, 2.0]])
        after = db.execute(compat.SQL_SEQ_ID, (segment,)).fetchone()[0]
        assert int(after) > int(before), "max_seq_id of the METADATA segment did not move"
        pattern = compat.log_topic_pattern(str(collection.id))
        assert db.execute(compat.SQL_LOG_HAS, (int(after), pattern)).fetchone() is not None, (
            "the log has no row of this collection at its own max_seq_id: the watermark is "
            "no longer the collection's last logged write, so catch-up cannot trust the log"
        )
        assert db.execute(compat.SQL_LOG_HAS, (int(after), "%/other")).fetchone() is None
        log = db.execute(compat.SQL_LOG_RANGE, (0, int(after), pattern)).fetchall()
        assert [(op, rid) for _, op, rid in log] == [
            (0, "a"),
            (0, "b"),
            (1, "a"),
            (2, "c"),
            (compat.OP_DELETE, "b"),
            (0, "d"),
        ], f"the log no longer reads as chromadb's operation codes per record: {log}"
        assert {op for _, op, _ in log} <= compat.OP_KNOWN
        assert db.execute(compat.SQL_SEQ_TYPE, (segment,)).fetchone()[0] == "integer", (
            "embeddings.seq_id is no longer an integer: the fallback scan cannot compare it"
        )
        touched = {r[0] for r in db.execute(compat.SQL_TOUCHED_SINCE, (segment, int(before)))}
        assert touched == {"d"}
        assert {r[0] for r in db.execute(compat.SQL_ALL_IDS, (segment,))} == {"a", "c", "d"}


def test_default_onnx_model_settings_are_read_when_called(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``ONNXMiniLM_L6_V2`` still has ``MODEL_DOWNLOAD_URL``, ``_MODEL_SHA256``,
    ``EXTRACTED_FOLDER_NAME`` and ``DOWNLOAD_PATH``, read at each call.

    Re-check on upgrade: chromadb/utils/embedding_functions/onnx_mini_lm_l6_v2.py (the
    archive layout, the checksum check and the cache path `_dense` writes into).
    """
    try:
        model = compat.default_onnx_model()
    except AttributeError as exc:
        pytest.fail(f"ONNXMiniLM_L6_V2 lost a download setting: {exc!r}")
    assert model.url.startswith("https://")
    assert re.fullmatch(r"[0-9a-f]{64}", model.sha256), "_MODEL_SHA256 is not a SHA-256"
    assert model.model_dir == chroma_default_model_dir()
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "DOWNLOAD_PATH", tmp_path)
    assert compat.default_onnx_model().model_dir == tmp_path / model.archive_folder


def test_chromas_download_check_looks_for_the_files_dense_checks() -> None:
    """chromadb decides to download unless the files `_dense` checks are all there.

    Re-check on upgrade: ``ONNXMiniLM_L6_V2._download_model_if_not_exists``; keep
    ``CHROMA_DEFAULT_MODEL_FILES`` equal to its list, or chromadb re-downloads a model
    `_dense` thinks is cached.
    """
    source = inspect.getsource(ONNXMiniLM_L6_V2._download_model_if_not_exists)
    listed = set(re.findall(r'"([\w.]+\.(?:json|onnx|txt))"', source))
    assert listed == set(CHROMA_DEFAULT_MODEL_FILES), (
        f"chromadb now checks {sorted(listed)}: update CHROMA_DEFAULT_MODEL_FILES"
    )


def test_cloud_api_key_lookup_ignores_embedded_clients() -> None:
    """``SharedSystemClient.get_chroma_cloud_api_key_from_clients`` exists and finds no key
    while only embedded clients are open.

    Re-check on upgrade: chromadb/api/shared_system_client.py (which clients it reads the
    ``x-chroma-token`` header of).
    """
    chromadb.EphemeralClient()
    try:
        found = compat.cloud_api_key_from_clients()
    except AttributeError as exc:
        pytest.fail(f"SharedSystemClient.get_chroma_cloud_api_key_from_clients is gone: {exc!r}")
    assert found is None


def test_bm25_tokenizer_counts_what_the_server_counts() -> None:
    """``Bm25Tokenizer(stemmer, stopwords, token_max_length).tokenize`` and
    ``get_english_stemmer`` (used by ``server._backends`` to count BM25 terms) still exist.

    Re-check on upgrade: chromadb/utils/embedding_functions/schemas/bm25_tokenizer.py.
    """
    pytest.importorskip("snowballstemmer")
    from chromadb.utils.embedding_functions.schemas.bm25_tokenizer import (
        Bm25Tokenizer,
        get_english_stemmer,
    )

    tokens = Bm25Tokenizer(get_english_stemmer(), ["the"], 40).tokenize("The running dogs!")
    assert tokens == ["run", "dog"]

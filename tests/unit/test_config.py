"""Config by name: get_config/build_from_config, the JSON schema, updates, chromadb Schema."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from chromadb.api.types import Schema, SparseVectorIndexConfig
from chromadb.execution.expression.operator import Key
from chromadb.utils.embedding_functions import sparse_known_embedding_functions

import chroma_sparse_ef
from chroma_sparse_ef import ChromaSparseEmbeddingFunction, ConfigurationError

SECRET = "ck-config-secret-never-persisted"


@pytest.fixture
def ef() -> ChromaSparseEmbeddingFunction:
    return ChromaSparseEmbeddingFunction(
        model="naver/efficient-splade-VI-BT-large-doc",
        api_key=SECRET,
        base_url="https://embed.example.test",
        task="retrieval",
        fetch_labels=True,
        batch_size=50,
        max_concurrency=4,
        max_retries=3,
        timeout=12.5,
    )


def test_registered_with_chromadb_under_the_stable_name() -> None:
    """Importing the package registers the class as 'chroma_sparse_ef'."""
    assert ChromaSparseEmbeddingFunction.name() == "chroma_sparse_ef"
    assert sparse_known_embedding_functions["chroma_sparse_ef"] is ChromaSparseEmbeddingFunction


def test_config_round_trips_through_build_from_config(
    ef: ChromaSparseEmbeddingFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_from_config(get_config()) rebuilds the same settings, key from the env var."""
    monkeypatch.setenv("CHROMA_API_KEY", "rebuilt-key")
    config = ef.get_config()
    rebuilt = ChromaSparseEmbeddingFunction.build_from_config(json.loads(json.dumps(config)))
    assert rebuilt.settings == ef.settings.with_changes(
        query_model="naver/efficient-splade-VI-BT-large-query"
    )
    assert rebuilt.get_config() == config


def test_config_never_holds_the_key(ef: ChromaSparseEmbeddingFunction) -> None:
    """The key is not in the config, only the env var's name."""
    config = ef.get_config()
    assert SECRET not in json.dumps(config)
    assert config["api_key_env_var"] == "CHROMA_API_KEY"
    assert "api_key" not in config


def test_config_is_valid_against_the_packaged_schema(ef: ChromaSparseEmbeddingFunction) -> None:
    """What get_config produces passes validate_config."""
    ChromaSparseEmbeddingFunction.validate_config(ef.get_config())


def test_env_var_base_url_is_not_persisted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL taken from CHROMA_EMBED_URL is looked up again on rebuild, not frozen in."""
    monkeypatch.setenv("CHROMA_EMBED_URL", "http://127.0.0.1:8123")
    assert "base_url" not in ChromaSparseEmbeddingFunction().get_config()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"api_key": "x"}, "never contain 'api_key'"),
        ({"surprise": 1}, "Additional properties"),
        ({"batch_size": 0}, "batch_size"),
        ({"fetch_labels": "true"}, "fetch_labels"),
        ({"timeout": -1}, "timeout"),
        ({"base_url": "file:///etc"}, "base_url"),
        ({"model": ""}, "model"),
    ],
)
def test_validate_config_rejects_bad_configs(
    ef: ChromaSparseEmbeddingFunction, change: dict[str, Any], fragment: str
) -> None:
    """Secrets, unknown keys and wrong types are rejected with the place named."""
    config = {**ef.get_config(), **change}
    with pytest.raises(ConfigurationError, match=fragment):
        ChromaSparseEmbeddingFunction.validate_config(config)


def test_validate_config_requires_model_and_env_var() -> None:
    """A config without a model cannot rebuild anything."""
    with pytest.raises(ConfigurationError, match="model"):
        ChromaSparseEmbeddingFunction.validate_config({"api_key_env_var": "X"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model", "BAAI/bge-m3"),
        ("query_model", "BAAI/bge-m3"),
        ("task", "other"),
        ("instructions", "Represent"),
        ("query_instructions", "Ask"),
    ],
)
def test_updates_that_change_the_vector_space_are_refused(
    ef: ChromaSparseEmbeddingFunction, key: str, value: str
) -> None:
    """Model, query model, task and instructions are immutable once vectors exist."""
    with pytest.raises(ConfigurationError, match=key):
        ef.validate_config_update(ef.get_config(), {key: value})


def test_operational_updates_are_allowed(ef: ChromaSparseEmbeddingFunction) -> None:
    """Batch size, concurrency, retries, timeout and labels can change freely."""
    ef.validate_config_update(
        ef.get_config(),
        {
            "batch_size": 10,
            "max_concurrency": 2,
            "max_retries": 0,
            "timeout": 5.0,
            "fetch_labels": False,
        },
    )


def test_update_repeating_the_same_model_is_allowed(ef: ChromaSparseEmbeddingFunction) -> None:
    """Restating an immutable value unchanged is not a change."""
    ef.validate_config_update(ef.get_config(), {"model": ef.model})


def _sparse_schema(ef: ChromaSparseEmbeddingFunction) -> Schema:
    return Schema().create_index(
        config=SparseVectorIndexConfig(source_key=Key.DOCUMENT, embedding_function=ef),
        key="sparse_embedding",
    )


def test_chromadb_schema_round_trip_rebuilds_the_function_by_name(
    ef: ChromaSparseEmbeddingFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serialize_to_json -> JSON text -> deserialize_from_json gives our function back."""
    monkeypatch.setenv("CHROMA_API_KEY", "rebuilt-key")
    payload = json.dumps(_sparse_schema(ef).serialize_to_json())
    assert SECRET not in payload
    stored = json.loads(payload)["keys"]["sparse_embedding"]["sparse_vector"]["sparse_vector_index"]
    assert stored["config"]["embedding_function"]["name"] == "chroma_sparse_ef"
    assert stored["config"]["embedding_function"]["type"] == "known"

    schema = Schema.deserialize_from_json(json.loads(payload))
    config = schema.keys["sparse_embedding"].sparse_vector.sparse_vector_index.config
    rebuilt = config.embedding_function
    assert isinstance(rebuilt, ChromaSparseEmbeddingFunction)
    assert rebuilt.get_config() == ef.get_config()
    assert config.source_key == "#document"


def test_schema_round_trip_without_a_key_warns_and_drops_the_function(
    ef: ChromaSparseEmbeddingFunction,
) -> None:
    """chromadb's own behaviour: an unbuildable function becomes None with a warning."""
    payload = _sparse_schema(ef).serialize_to_json()
    with pytest.warns(UserWarning, match="CHROMA_API_KEY"):
        schema = Schema.deserialize_from_json(payload)
    config = schema.keys["sparse_embedding"].sparse_vector.sparse_vector_index.config
    assert config.embedding_function is None


def test_deepcopy_shares_the_thread_safe_instance(ef: ChromaSparseEmbeddingFunction) -> None:
    """Deep copies (chromadb copies configs) do not duplicate connection pools."""
    assert copy.deepcopy(ef) is ef


def test_public_api_is_sorted_and_complete() -> None:
    """__all__ is sorted and names exactly what the package exports."""
    names = chroma_sparse_ef.__all__
    # ruff's RUF022 order: CONSTANTS, then Classes, then everything else, each alphabetical.
    assert names == sorted(
        names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    public = {n for n in vars(chroma_sparse_ef) if not n.startswith("_") or n == "__version__"}
    modules = {n for n, v in vars(chroma_sparse_ef).items() if type(v).__name__ == "module"}
    assert set(names) == public - modules - {"annotations"}


@pytest.fixture
def cloud_client_with_key() -> Any:
    """A real chromadb HTTP client system for api.trychroma.com holding a key (no request is sent)."""
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings

    settings = Settings(
        chroma_api_impl="chromadb.api.fastapi.FastAPI",
        chroma_server_host="api.trychroma.com",
        chroma_server_http_port=443,
        chroma_server_ssl_enabled=True,
        chroma_server_headers={"x-chroma-token": "key-of-the-cloud-client"},
    )
    identifier = "chroma-sparse-ef-test-cloud-client"
    yield SharedSystemClient._create_system_if_not_exists(identifier, settings)
    SharedSystemClient._identifier_to_system.pop(identifier, None)


def test_key_falls_back_to_an_existing_cloud_clients_key(cloud_client_with_key: Any) -> None:
    """No explicit key, nothing in the env var: the key of a Chroma Cloud client is used."""
    ef = ChromaSparseEmbeddingFunction(api_key_env_var="NOT_SET_ANYWHERE")
    headers = ef._core.requests["documents"].headers
    assert headers["x-chroma-token"] == "key-of-the-cloud-client"
    assert "key-of-the-cloud-client" not in repr(ef)
    assert "key-of-the-cloud-client" not in json.dumps(ef.get_config())


def test_env_var_wins_over_the_cloud_clients_key(
    cloud_client_with_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order is explicit key, env var, then a CloudClient's key."""
    monkeypatch.setenv("CHROMA_API_KEY", "from-env")
    ef = ChromaSparseEmbeddingFunction()
    assert ef._core.requests["documents"].headers["x-chroma-token"] == "from-env"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, {"task": "retrieval"}),
        ({"task": "retrieval"}, {"task": None}),
        ({}, {"instructions": "Represent"}),
        ({"instructions": "Represent"}, {"instructions": None}),
        ({}, {"query_instructions": "Ask"}),
        ({"model": "naver/efficient-splade-VI-BT-large-doc"}, {"query_model": "BAAI/bge-m3"}),
    ],
)
def test_full_config_updates_that_add_or_remove_space_settings_are_refused(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    """chromadb passes two full configs: adding or removing a task or instructions is a change."""
    old = ChromaSparseEmbeddingFunction(api_key="k", base_url="https://e.test", **before)
    new = ChromaSparseEmbeddingFunction(
        api_key="k", base_url="https://e.test", **{**before, **after}
    )
    with pytest.raises(ConfigurationError, match="not supported"):
        new.validate_config_update(old.get_config(), new.get_config())


def test_full_config_update_with_equal_settings_is_allowed() -> None:
    """Two equal full configs, other batching aside, are compatible."""
    old = ChromaSparseEmbeddingFunction(api_key="k", base_url="https://e.test", task="t")
    new = ChromaSparseEmbeddingFunction(
        api_key="k", base_url="https://e.test", task="t", batch_size=5
    )
    new.validate_config_update(old.get_config(), new.get_config())


def test_shipped_json_schema_is_the_one_derived_from_settings() -> None:
    """schemas/chroma_sparse_ef.json equals what `Settings` declares. To update it:
    python -c "import json; from chroma_sparse_ef._config import config_schema;
    print(json.dumps(config_schema(), indent=2))" > chroma_sparse_ef/schemas/chroma_sparse_ef.json
    """
    from chroma_sparse_ef._config import config_schema, shipped_schema

    assert shipped_schema() == config_schema()


def test_every_setting_is_persisted_and_rebuilt_from_one_declaration() -> None:
    """Each Settings field is a schema property, and a config with every field set
    rebuilds the same Settings: nothing is listed twice by hand."""
    from dataclasses import fields

    from chroma_sparse_ef._config import Settings, config_schema

    names = [f.name for f in fields(Settings)]
    assert list(config_schema()["properties"]) == names
    settings = Settings(
        model="BAAI/bge-m3",
        query_model="BAAI/bge-m3",
        api_key_env_var="MY_KEY",
        base_url="https://embed.example.test",
        instructions="find",
        query_instructions="ask",
        fetch_labels=True,
        batch_size=7,
        max_concurrency=3,
        max_retries=5,
        timeout=12.5,
    )
    config = settings.to_config()
    assert set(config) == set(names) - {"task"}
    assert Settings.from_config(config) == settings


def test_the_environment_is_read_once_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """CHROMA_EMBED_URL changing later moves neither requests nor `base_url`."""
    monkeypatch.setenv("CHROMA_EMBED_URL", "http://127.0.0.1:9001")
    ef = ChromaSparseEmbeddingFunction()
    monkeypatch.setenv("CHROMA_EMBED_URL", "http://127.0.0.1:9002")
    assert ef.base_url == "http://127.0.0.1:9001"
    assert ef._core.url == "http://127.0.0.1:9001/embed_sparse"


class TestHeaderSafeSettings:
    @pytest.mark.parametrize("model", ["modèle", "a\r\nx-evil: 1", " padded"])
    def test_a_model_a_header_cannot_carry_is_refused_at_construction(self, model: str) -> None:
        """A model name sent as a header must be printable ASCII: refused before any request."""
        with pytest.raises(ConfigurationError, match="cannot be sent as an HTTP header"):
            ChromaSparseEmbeddingFunction(model=model, api_key=SECRET)

    @pytest.mark.parametrize("suffix", ["é", "\n", " "])
    def test_a_key_a_header_cannot_carry_is_refused_without_quoting_it(self, suffix: str) -> None:
        """A key with a non-ASCII or control character: ConfigurationError that names
        api_key but does not quote it."""
        with pytest.raises(ConfigurationError, match="api_key cannot be sent") as info:
            ChromaSparseEmbeddingFunction(api_key=SECRET + suffix)
        assert SECRET not in str(info.value)

    def test_a_failing_constructor_shows_no_key_in_a_traceback_with_locals(self) -> None:
        """A bad setting beside a key: the traceback, locals included, holds no key, and
        the half-built instance's repr does not raise."""
        import traceback

        with pytest.raises(ConfigurationError) as info:
            ChromaSparseEmbeddingFunction(api_key=SECRET, batch_size=0)
        text = "".join(
            traceback.TracebackException.from_exception(info.value, capture_locals=True).format()
        )
        assert "batch_size" in text
        assert SECRET not in text
        assert "<not constructed>" in text


def test_chroma_embed_url_is_read_once_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing CHROMA_EMBED_URL later moves neither `base_url` nor where requests go."""
    monkeypatch.setenv("CHROMA_EMBED_URL", "http://127.0.0.1:8123")
    ef = ChromaSparseEmbeddingFunction()
    monkeypatch.setenv("CHROMA_EMBED_URL", "http://127.0.0.1:9999")
    assert ef.base_url == "http://127.0.0.1:8123"
    assert ef._core.url == "http://127.0.0.1:8123/embed_sparse"
    assert not hasattr(ef.settings, "resolved_base_url")  # no second, live reading

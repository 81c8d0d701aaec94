"""The offline dense leg: HashingEmbeddingFunction and the choice of dense function."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from chromadb.api.types import DefaultEmbeddingFunction
from chromadb.utils.embedding_functions import known_embedding_functions
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

from chroma_sparse_ef._dense import (
    CHROMA_DEFAULT_MODEL_FILES,
    DENSE_ENV_VAR,
    DenseChoice,
    chroma_default_model_dir,
    default_dense_function,
)
from chroma_sparse_ef._exceptions import ConfigurationError, InvalidInputError
from chroma_sparse_ef._hashing import HASHING_FUNCTION_NAME, HashingEmbeddingFunction


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(autouse=True)
def _no_dense_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's CHROMA_SPARSE_EF_DENSE out of these tests."""
    monkeypatch.delenv(DENSE_ENV_VAR, raising=False)


@pytest.fixture
def ef() -> HashingEmbeddingFunction:
    return HashingEmbeddingFunction()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: a connection to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int) -> Path:
    """chromadb's model cache in an empty temporary folder, its download URL refused.

    Returns the onnx folder. The URL points at a closed loopback port, so a fetch fails
    at once and never reaches the network.
    """
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "DOWNLOAD_PATH", tmp_path / "all-MiniLM-L6-v2")
    monkeypatch.setattr(
        ONNXMiniLM_L6_V2, "MODEL_DOWNLOAD_URL", f"http://127.0.0.1:{closed_port}/onnx.tar.gz"
    )
    return tmp_path / "all-MiniLM-L6-v2" / "onnx"


def fill(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in CHROMA_DEFAULT_MODEL_FILES:
        (folder / name).write_bytes(b"placeholder")


# -- HashingEmbeddingFunction -----------------------------------------------------------


def test_same_text_gives_the_same_vector_across_instances(ef: HashingEmbeddingFunction) -> None:
    """Vectors are deterministic: a fresh instance (fresh cache) agrees exactly."""
    text = "Serialize obj to a JSON formatted str."
    first = ef([text])[0]
    again = HashingEmbeddingFunction()([text])[0]
    np.testing.assert_array_equal(first, again)


def test_vectors_are_pinned_so_persisted_collections_stay_valid() -> None:
    """The hashing is stable across processes and releases (blake2b, not salted hash())."""
    ef = HashingEmbeddingFunction(char_ngrams=False, word_bigrams=False)
    vector = ef(["json"])[0]
    assert np.flatnonzero(vector).tolist() == [261]
    assert vector[261] == pytest.approx(-1.0)


def test_vectors_are_float32_of_the_configured_width_and_unit_length() -> None:
    """Every vector has `dimensions` float32 entries and L2 norm 1."""
    ef = HashingEmbeddingFunction(dimensions=64)
    vectors = ef(["a short text", "another, longer text about sockets and files", "x"])
    assert len(vectors) == 3
    for vector in vectors:
        assert vector.dtype == np.float32
        assert vector.shape == (64,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_empty_and_stopword_only_texts_get_a_shared_unit_vector_not_zero(
    ef: HashingEmbeddingFunction,
) -> None:
    """Texts with no words are equal to each other and never the zero vector."""
    empty, stop, punct = ef(["", "the of and", "!!! ..."])
    assert abs(float(np.linalg.norm(empty)) - 1.0) < 1e-5
    np.testing.assert_array_equal(empty, stop)
    np.testing.assert_array_equal(empty, punct)


def test_texts_sharing_words_are_closer_than_unrelated_texts(
    ef: HashingEmbeddingFunction,
) -> None:
    """Lexical overlap is what the embedding measures."""
    query, related, unrelated = ef(
        [
            "decode a JSON document into Python objects",
            "Deserialize a JSON document to a Python object.",
            "Return the number of seconds since the epoch as a float.",
        ]
    )
    assert cosine(query, related) > 0.3
    assert cosine(query, related) > cosine(query, unrelated) + 0.2


def test_character_ngrams_match_word_variants() -> None:
    """With char n-grams, "parser" is close to "parse"; without them, only by chance."""
    with_grams = HashingEmbeddingFunction()
    without = HashingEmbeddingFunction(char_ngrams=False)
    a, b = with_grams(["parser"]), with_grams(["parse"])
    c, d = without(["parser"]), without(["parse"])
    assert cosine(a[0], b[0]) > 0.1
    assert cosine(a[0], b[0]) > abs(cosine(c[0], d[0])) + 0.1


def test_word_order_counts_only_through_bigrams() -> None:
    """Bigrams make word order matter; without them a text is a bag of words."""
    bag = HashingEmbeddingFunction(word_bigrams=False)
    a, b = bag(["dog bites man", "man bites dog"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    ordered = HashingEmbeddingFunction()
    c, d = ordered(["dog bites man", "man bites dog"])
    assert cosine(c, d) < 0.99


def test_repeated_words_count_sublinearly(ef: HashingEmbeddingFunction) -> None:
    """tf is damped (1 + log tf): ten repeats do not swamp another word."""
    once = ef(["socket timeout"])[0]
    many = ef(["socket " * 10 + "timeout"])[0]
    timeout = ef(["timeout"])[0]
    assert cosine(many, timeout) > 0.2
    assert cosine(once, timeout) > cosine(many, timeout)


def test_embed_query_equals_call(ef: HashingEmbeddingFunction) -> None:
    """The embedding is symmetric: queries and documents share one space."""
    np.testing.assert_array_equal(ef.embed_query(["open a file"])[0], ef(["open a file"])[0])


def test_embed_matrix_rows_equal_the_call_vectors(ef: HashingEmbeddingFunction) -> None:
    """`embed_matrix` is the same vectors as one array."""
    texts = ["read lines from a file", "write bytes"]
    matrix = ef.embed_matrix(texts)
    assert matrix.shape == (2, 384)
    np.testing.assert_array_equal(matrix[1], ef(texts)[1])


@pytest.mark.parametrize("bad", ["a bare string", None, b"bytes", [1, 2], ["ok", None]])
def test_bad_input_raises_invalid_input_error(ef: HashingEmbeddingFunction, bad: object) -> None:
    """A bare string is refused, not split into characters; non-str items are refused."""
    with pytest.raises(InvalidInputError):
        ef(bad)  # type: ignore[arg-type]


def test_an_empty_list_is_refused(ef: HashingEmbeddingFunction) -> None:
    """An empty input list raises a ValueError, as chromadb does for every function."""
    with pytest.raises(ValueError, match="empty"):
        ef([])


@pytest.mark.parametrize(
    "kwargs", [{"dimensions": 0}, {"dimensions": True}, {"dimensions": 3.5}, {"stopwords": "yes"}]
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, object]) -> None:
    """Invalid constructor arguments fail before anything is embedded."""
    with pytest.raises(ConfigurationError):
        HashingEmbeddingFunction(**kwargs)  # type: ignore[arg-type]


def test_it_embeds_three_thousand_docs_in_well_under_a_few_seconds() -> None:
    """Vectorised enough for the demo corpus: 3,000 docstring-sized texts, cold cache."""
    import time

    texts = [
        f"Return the {i}th item of the sequence, parsing field {i % 97} as a number "
        f"and raising ValueError when token{i} is malformed or the buffer overflows."
        for i in range(3000)
    ]
    start = time.perf_counter()
    HashingEmbeddingFunction().embed_matrix(texts)
    assert time.perf_counter() - start < 3.0


# -- chromadb protocol: name, spaces, config, registration -----------------------------


def test_it_is_registered_with_chromadb_under_a_stable_name() -> None:
    """chromadb rebuilds it by name: ``chroma_sparse_ef_hashing``."""
    assert HashingEmbeddingFunction.name() == HASHING_FUNCTION_NAME == "chroma_sparse_ef_hashing"
    assert known_embedding_functions[HASHING_FUNCTION_NAME] is HashingEmbeddingFunction


def test_spaces_default_to_cosine(ef: HashingEmbeddingFunction) -> None:
    """Cosine is the default space; all three spaces are supported (unit vectors)."""
    assert ef.default_space() == "cosine"
    assert set(ef.supported_spaces()) == {"cosine", "ip", "l2"}


def test_config_round_trips_and_rebuilds_an_equal_function() -> None:
    """`build_from_config(get_config())` gives the same settings and the same vectors."""
    ef = HashingEmbeddingFunction(dimensions=128, word_bigrams=False, stopwords=False)
    config = ef.get_config()
    assert config == {
        "dimensions": 128,
        "word_bigrams": False,
        "char_ngrams": True,
        "stopwords": False,
        "hashing_version": 1,
    }
    rebuilt = HashingEmbeddingFunction.build_from_config(config)
    assert rebuilt.get_config() == config
    np.testing.assert_array_equal(rebuilt(["a text"])[0], ef(["a text"])[0])
    assert not ef.is_legacy()


@pytest.mark.parametrize(
    "config",
    [
        {"dimensions": -1},
        {"dimensions": "384"},
        {"char_ngrams": 1},
        {"hashing_version": 2},
        {"unknown": True},
    ],
)
def test_bad_configs_are_refused(config: dict[str, object]) -> None:
    """A config this version did not write raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        HashingEmbeddingFunction.build_from_config(config)


def test_config_updates_that_change_the_space_are_refused(ef: HashingEmbeddingFunction) -> None:
    """Changing any setting would make stored vectors incomparable."""
    ef.validate_config_update(ef.get_config(), {"dimensions": 384})
    with pytest.raises(ConfigurationError, match="dimensions"):
        ef.validate_config_update(ef.get_config(), {"dimensions": 512})


# -- default_dense_function ------------------------------------------------------------


def test_the_default_model_dir_follows_chromadb(model_cache: Path) -> None:
    """The path checked is chromadb's own DOWNLOAD_PATH / onnx."""
    assert chroma_default_model_dir() == model_cache


def test_falls_back_to_hashing_when_the_model_cannot_be_fetched(model_cache: Path) -> None:
    """Not cached and the download refused: hashing, with one line naming the URL and error."""
    choice = default_dense_function(progress=False)
    assert isinstance(choice, DenseChoice)
    assert choice.kind == "hashing"
    assert isinstance(choice.function, HashingEmbeddingFunction)
    assert "could not fetch Chroma's default model" in choice.reason
    assert ONNXMiniLM_L6_V2.MODEL_DOWNLOAD_URL in choice.reason
    assert "ConnectError" in choice.reason
    assert f"{DENSE_ENV_VAR}=hashing" in choice.reason
    assert "\n" not in str(choice)
    assert "lexical" in choice.name
    assert not model_cache.exists(), "a failed fetch must not leave a model folder"
    assert list(model_cache.parent.iterdir()) == [], "nor temporary files"


def test_a_partial_cache_counts_as_not_cached(model_cache: Path) -> None:
    """Every file chromadb needs must be there; one missing means a fetch (refused here)."""
    fill(model_cache)
    (model_cache / "model.onnx").unlink()
    choice = default_dense_function(progress=False)
    assert choice.kind == "hashing"
    assert "could not fetch" in choice.reason
    assert sorted(p.name for p in model_cache.iterdir()) == sorted(
        set(CHROMA_DEFAULT_MODEL_FILES) - {"model.onnx"}
    ), "a failed fetch leaves an existing folder as it was"


def test_uses_chromas_default_when_its_model_is_cached(model_cache: Path) -> None:
    """All files present: Chroma's DefaultEmbeddingFunction, said so in the reason."""
    fill(model_cache)
    choice = default_dense_function()
    assert choice.kind == "default"
    assert isinstance(choice.function, DefaultEmbeddingFunction)
    assert "all-MiniLM-L6-v2" in choice.name
    assert str(model_cache) in choice.reason


def test_falls_back_when_the_onnx_runtime_is_missing(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without onnxruntime the model cannot run: hashing, naming the package, no fetch."""
    monkeypatch.setattr("chroma_sparse_ef._dense._missing_runtime", lambda: ["onnxruntime"])
    choice = default_dense_function()
    assert choice.kind == "hashing"
    assert "onnxruntime" in choice.reason
    assert not model_cache.parent.exists(), "nothing fetched for a model that cannot run"


def test_cache_dir_argument_overrides_chromadb_path(tmp_path: Path, model_cache: Path) -> None:
    """`cache_dir` is checked instead of chromadb's folder."""
    fill(tmp_path / "elsewhere")
    assert default_dense_function(cache_dir=tmp_path / "elsewhere").kind == "default"


def test_prefer_hashing_wins_even_when_the_model_is_cached(model_cache: Path) -> None:
    """`prefer="hashing"` forces the offline function."""
    fill(model_cache)
    choice = default_dense_function("hashing")
    assert choice.kind == "hashing"
    assert "prefer='hashing'" in choice.reason


def test_prefer_default_warns_in_the_reason_that_chromadb_will_download(
    model_cache: Path,
) -> None:
    """Forcing the default without a cache says chromadb downloads on first use."""
    choice = default_dense_function("default")
    assert choice.kind == "default"
    assert "will download" in choice.reason
    assert not model_cache.exists(), "choosing must not download: only calling it would"


@pytest.mark.parametrize(("value", "kind"), [("hashing", "hashing"), ("DEFAULT", "default")])
def test_the_env_var_overrides_the_choice(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch, value: str, kind: str
) -> None:
    """CHROMA_SPARSE_EF_DENSE picks the function, case-insensitively, and is named."""
    monkeypatch.setenv(DENSE_ENV_VAR, value)
    choice = default_dense_function()
    assert choice.kind == kind
    assert DENSE_ENV_VAR in choice.reason


def test_an_unknown_preference_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in the env var fails clearly, naming the variable."""
    monkeypatch.setenv(DENSE_ENV_VAR, "minilm")
    with pytest.raises(ConfigurationError, match=DENSE_ENV_VAR):
        default_dense_function()


def test_str_of_a_choice_says_what_ran_and_why(model_cache: Path) -> None:
    """`str(choice)` is the one line demos and notebooks print."""
    choice = default_dense_function(progress=False)
    assert str(choice) == f"{choice.name}: {choice.reason}"


def test_chromadbs_download_attributes_are_what_the_fetch_reads() -> None:
    """Contract with chromadb: the URL, checksum and folder names the fetch reads exist.

    If this fails after a chromadb upgrade, `_dense.default_dense_function` must read the
    model's location and checksum from wherever chromadb moved them.
    """
    assert ONNXMiniLM_L6_V2.MODEL_DOWNLOAD_URL.startswith("https://")
    assert len(ONNXMiniLM_L6_V2._MODEL_SHA256) == 64
    assert ONNXMiniLM_L6_V2.EXTRACTED_FOLDER_NAME == "onnx"
    assert Path(ONNXMiniLM_L6_V2.DOWNLOAD_PATH).name == "all-MiniLM-L6-v2"

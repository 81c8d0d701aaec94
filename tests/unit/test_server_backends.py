"""Backends and routing: BM25 vectors are chromadb's, token counts honest, routing fixed."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from chromadb.utils.embedding_functions.chroma_bm25_embedding_function import (
    ChromaBm25EmbeddingFunction,
)
from chromadb.utils.embedding_functions.schemas.bm25_tokenizer import (
    DEFAULT_CHROMA_BM25_STOPWORDS,
    Bm25Tokenizer,
    get_english_stemmer,
)

from chroma_sparse_ef import ConfigurationError
from chroma_sparse_ef._models import MODELS
from chroma_sparse_ef.server import (
    SPARSE_MODELS,
    Bm25Backend,
    EmbedOutput,
    SparseBackend,
    SparseItem,
)
from chroma_sparse_ef.server._problems import HTTPProblem
from chroma_sparse_ef.server._routing import BackendRouter, check_output

TEXTS = [
    "Sparse retrieval matches exact terms, names and rare words.",
    "The quick brown foxes jumped over the lazy dogs; the dogs slept.",
    "BM25 weighs term frequency against document length.",
    "the and of to",  # stopwords only
    "",
    "Ünïcödé wörds, naïve café résumé: stemmed too?",
]


@pytest.fixture(scope="module")
def bm25() -> Bm25Backend:
    """One backend for the module: construction imports chromadb once."""
    return Bm25Backend()


def _embed(backend: SparseBackend, texts: Sequence[str], labels: bool = True) -> EmbedOutput:
    return backend.embed(
        texts, model="BAAI/bge-m3", task="", target="", instructions=None, fetch_labels=labels
    )


class TestBm25Backend:
    def test_vectors_are_exactly_chromadb_bm25(self, bm25: Bm25Backend) -> None:
        """Indices, values and labels equal ChromaBm25EmbeddingFunction's, text by text."""
        expected = ChromaBm25EmbeddingFunction(include_tokens=True)(TEXTS)
        items, _ = _embed(bm25, TEXTS)
        for item, vec in zip(items, expected, strict=True):
            assert item.indices == list(vec.indices)
            assert item.values == pytest.approx(list(vec.values))
            assert item.labels == list(vec.labels or [])

    def test_num_tokens_counts_the_terms_bm25_weighted(self, bm25: Bm25Backend) -> None:
        """num_tokens is the sum of chromadb's Bm25Tokenizer token counts, repeats included."""
        tokenizer = Bm25Tokenizer(get_english_stemmer(), DEFAULT_CHROMA_BM25_STOPWORDS, 40)
        _, num_tokens = _embed(bm25, TEXTS)
        assert num_tokens == sum(len(tokenizer.tokenize(t)) for t in TEXTS)
        assert _embed(bm25, ["apple apple banana"]).num_tokens == 3

    def test_a_stopword_only_text_is_an_empty_vector(self, bm25: Bm25Backend) -> None:
        """Stopwords are dropped: the item is valid and empty, with no tokens counted."""
        item, num_tokens = _embed(bm25, ["the and of to"])
        assert item == [SparseItem(indices=[], values=[], labels=[])]
        assert num_tokens == 0

    def test_labels_only_when_asked_for(self, bm25: Bm25Backend) -> None:
        """fetch_labels=False gives labels None; True gives one stem per index."""
        without = _embed(bm25, TEXTS[:1], labels=False).items[0]
        with_labels = _embed(bm25, TEXTS[:1], labels=True).items[0]
        assert without.labels is None
        assert with_labels.labels is not None
        assert len(with_labels.labels) == len(with_labels.indices)
        assert "retriev" in with_labels.labels

    def test_indices_are_sorted_unique_and_fit_u32(self, bm25: Bm25Backend) -> None:
        """What Chroma and the client require of a sparse vector."""
        for item in _embed(bm25, TEXTS).items:
            assert item.indices == sorted(set(item.indices))
            assert all(0 <= i < 2**32 for i in item.indices)

    def test_deterministic_across_instances(self, bm25: Bm25Backend) -> None:
        """Same texts, same vectors: no randomness, no per-process state."""
        assert _embed(Bm25Backend(), TEXTS) == _embed(bm25, TEXTS)

    def test_safe_to_call_from_many_threads(self, bm25: Bm25Backend) -> None:
        """The server calls embed from worker threads at once; answers must not mix."""
        expected = [_embed(bm25, [t]) for t in TEXTS] * 8
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(lambda t: _embed(bm25, [t]), TEXTS * 8))
        assert got == expected

    def test_empty_input_is_empty_output(self, bm25: Bm25Backend) -> None:
        """No texts: no items, no tokens (chromadb's function would raise)."""
        assert _embed(bm25, []) == EmbedOutput([], 0)

    def test_serves_every_sparse_model_and_says_it_is_not_splade(self, bm25: Bm25Backend) -> None:
        """All four sparse names by default, announced honestly."""
        assert set(bm25.models) == {n for n, i in MODELS.items() if i.sparse} == set(SPARSE_MODELS)
        assert "NOT SPLADE" in bm25.description
        assert isinstance(bm25, SparseBackend)

    def test_needs_at_least_one_model(self) -> None:
        """A backend that serves nothing is a configuration error."""
        with pytest.raises(ConfigurationError):
            Bm25Backend(models=[])


class StubBackend:
    """A minimal backend: one index per text, proving the interface is all routing needs."""

    def __init__(self, name: str, models: Sequence[str], *, extra_items: int = 0) -> None:
        self.name = name
        self.models = tuple(models)
        self.description = "test backend"
        self._extra = extra_items

    def embed(
        self,
        texts: Sequence[str],
        *,
        model: str,
        task: str | None,
        target: str | None,
        instructions: str | None,
        fetch_labels: bool,
    ) -> EmbedOutput:
        items = [SparseItem([len(t)], [1.0], [model]) for t in texts]
        items += [SparseItem([], [])] * self._extra
        return EmbedOutput(items, len(texts))


class TestBackendRouter:
    def test_first_backend_listing_a_model_serves_it(self, bm25: Bm25Backend) -> None:
        """A backend placed first takes its models; BM25 keeps the rest."""
        stub = StubBackend("stub", ["naver/efficient-splade-VI-BT-large-query"])
        router = BackendRouter([stub, bm25])
        assert router.resolve("naver/efficient-splade-VI-BT-large-query") is stub
        assert router.resolve("BAAI/bge-m3") is bm25
        assert router.routes()["Qwen/Qwen3-Embedding-0.6B"] is None

    @pytest.mark.parametrize(
        ("model", "status"),
        [
            (None, 400),
            ("not/a-model", 400),
            ("Qwen/Qwen3-Embedding-0.6B", 501),
            ("BAAI/bge-m3", 501),  # sparse, but no backend here serves it
        ],
    )
    def test_resolve_gives_the_hosted_services_errors(self, model: str | None, status: int) -> None:
        """Missing or unknown model: 400; dense-only or unserved: 501."""
        router = BackendRouter([StubBackend("stub", ["prithivida/Splade_PP_en_v1"])])
        with pytest.raises(HTTPProblem) as info:
            router.resolve(model)
        assert info.value.status_code == status

    def test_unknown_model_name_is_quoted_truncated(self) -> None:
        """A huge header value is not echoed in full."""
        router = BackendRouter([StubBackend("stub", ["BAAI/bge-m3"])])
        with pytest.raises(HTTPProblem) as info:
            router.resolve("x" * 5000)
        assert len(info.value.message) < 500

    @pytest.mark.parametrize(
        "backends",
        [
            [],
            [StubBackend("s", ["nope/unknown"])],
            [StubBackend("s", ["Qwen/Qwen3-Embedding-0.6B"])],
            [StubBackend("s", ["BAAI/bge-m3"]), StubBackend("s", ["BAAI/bge-m3"])],
        ],
    )
    def test_bad_configurations_are_refused(self, backends: list[SparseBackend]) -> None:
        """No backends, unknown or dense-only claims, duplicate names: ConfigurationError."""
        with pytest.raises(ConfigurationError):
            BackendRouter(backends)

    def test_wrong_item_count_is_a_500_not_a_wrong_answer(self) -> None:
        """A backend returning more vectors than texts is caught before the response."""
        stub = StubBackend("stub", ["BAAI/bge-m3"], extra_items=1)
        output = _embed(stub, ["a"])
        with pytest.raises(HTTPProblem) as info:
            check_output(output, 1, stub)
        assert info.value.status_code == 500

"""Backends: what turns texts into sparse vectors, behind one small interface.

`SparseBackend` is the interface; routing (`_routing.py`) maps each model name to the
first backend that serves it, so a backend for real SPLADE or BGE-M3 weights plugs in
without touching the HTTP layer. `Bm25Backend` is the default, and needs no weights.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from .._exceptions import ConfigurationError
from .._models import MODELS
from ._settings import STEM_CACHE_SIZE

if TYPE_CHECKING:
    from chromadb.utils.embedding_functions.schemas.bm25_tokenizer import SnowballStemmer

__all__ = ["SPARSE_MODELS", "Bm25Backend", "EmbedOutput", "SparseBackend", "SparseItem"]

#: Every model the hosted service serves sparse vectors for, from the package's catalog.
SPARSE_MODELS: tuple[str, ...] = tuple(name for name, info in MODELS.items() if info.sparse)

# Defaults of chromadb's ChromaBm25EmbeddingFunction (chroma_bm25_embedding_function.py),
# restated so the server's configuration is visible without importing chromadb.
#: BM25 term-frequency saturation.
BM25_K = 1.2
#: BM25 length normalisation.
BM25_B = 0.75
#: Average document length, in tokens, that BM25 normalises against.
BM25_AVG_DOC_LENGTH = 256.0
#: Longer words are dropped by chromadb's tokenizer.
BM25_TOKEN_MAX_LENGTH = 40


@dataclass(frozen=True, slots=True)
class SparseItem:
    """One sparse vector as a backend returns it.

    Attributes:
        indices: Vocabulary or hash indices, ascending and unique.
        values: One weight per index.
        labels: One label per index (the token), or None if the backend has none.
    """

    indices: list[int]
    values: list[float]
    labels: list[str] | None = None


class EmbedOutput(NamedTuple):
    """What `SparseBackend.embed` returns.

    Attributes:
        items: One `SparseItem` per input text, in order.
        num_tokens: Tokens the backend tokenized for all texts together (what that means
            is the backend's to document; it is reported to clients as `num_tokens`).
    """

    items: list[SparseItem]
    num_tokens: int


@runtime_checkable
class SparseBackend(Protocol):
    """Turns texts into sparse vectors for some model names.

    `embed` runs in a worker thread, so it may block; it must be safe to call from
    several threads at once.
    """

    @property
    def name(self) -> str:
        """Short name, reported by ``/healthz`` and in the backend response header."""
        ...

    @property
    def models(self) -> tuple[str, ...]:
        """The `x-chroma-embedding-model` names this backend serves."""
        ...

    @property
    def description(self) -> str:
        """One honest line saying what the vectors are, for logs and ``/healthz``."""
        ...

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
        """Embed `texts` (never empty) for `model`, one of `models`.

        Args:
            texts: The texts, in order.
            model: The requested model name.
            task: The request's `task`, if given (may be empty).
            target: The request's `target` (e.g. documents or queries), if given.
            instructions: The request's `instructions`, if given.
            fetch_labels: Whether the client asked for labels; a backend may skip the
                work of producing them when False.

        Returns:
            One item per text and the token count.
        """
        ...


class _MemoStemmer:
    """The Snowball English stemmer, memoised and safe to share between threads.

    Snowball stemmer objects keep state between calls, so each thread gets its own;
    the memo is shared (`functools.lru_cache` is thread-safe).
    """

    def __init__(self, maxsize: int) -> None:
        self._local = threading.local()
        self.stem = functools.lru_cache(maxsize=maxsize)(self._stem)

    def _stem(self, token: str) -> str:
        stemmer: SnowballStemmer | None = getattr(self._local, "stemmer", None)
        if stemmer is None:
            from chromadb.utils.embedding_functions.schemas.bm25_tokenizer import (
                get_english_stemmer,
            )

            stemmer = get_english_stemmer()
            self._local.stemmer = stemmer
        return stemmer.stem(token)


class Bm25Backend:
    """BM25 term weights from chromadb's `ChromaBm25EmbeddingFunction`. Not SPLADE.

    Indices are murmur3 hashes of Snowball stems, values BM25 term weights, labels the
    stems: the same vectors Chroma's own BM25 function makes, deterministic and with no
    weights to download. They behave like a lexical sparse model (exact terms match,
    stopwords do not) but they are not what SPLADE or BGE-M3 would return, which is why
    the server announces this backend in its log, ``/healthz`` and a response header.

    `num_tokens` is the number of terms BM25 weighted: the words left after chromadb's
    `Bm25Tokenizer` has split on non-word characters and dropped stopwords and words
    longer than `token_max_length`, summed over all texts (the document length BM25
    normalises by). A text of stopwords only has none, and gets an empty vector.

    Args:
        models: Model names to serve; every sparse model in the catalog by default.
        k: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        avg_doc_length: Average document length BM25 normalises against.
        token_max_length: Longer words are dropped.
        stopwords: Words to drop; chromadb's English list by default.

    Raises:
        ConfigurationError: If `models` is empty, or `snowballstemmer` is missing.
    """

    def __init__(
        self,
        models: Iterable[str] = SPARSE_MODELS,
        *,
        k: float = BM25_K,
        b: float = BM25_B,
        avg_doc_length: float = BM25_AVG_DOC_LENGTH,
        token_max_length: int = BM25_TOKEN_MAX_LENGTH,
        stopwords: Iterable[str] | None = None,
    ) -> None:
        self._models = tuple(dict.fromkeys(models))
        if not self._models:
            raise ConfigurationError("Bm25Backend needs at least one model name to serve")
        try:
            import snowballstemmer  # noqa: F401  (chromadb imports it only when stemming)
        except ImportError as exc:
            raise ConfigurationError(
                "the BM25 backend needs snowballstemmer: pip install 'chroma-sparse-ef[server]'"
            ) from exc
        # chromadb is imported here, not at module level: it takes most of a second.
        from chromadb.utils.embedding_functions.chroma_bm25_embedding_function import (
            DEFAULT_CHROMA_BM25_STOPWORDS,
            ChromaBm25EmbeddingFunction,
        )
        from chromadb.utils.embedding_functions.schemas.bm25_tokenizer import Bm25Tokenizer

        words = list(stopwords) if stopwords is not None else list(DEFAULT_CHROMA_BM25_STOPWORDS)
        self._ef = ChromaBm25EmbeddingFunction(
            k=k,
            b=b,
            avg_doc_length=avg_doc_length,
            token_max_length=token_max_length,
            stopwords=words,
            include_tokens=True,
        )
        # The function builds a fresh tokenizer per text (measured: ~14 us of ~1,500 us a
        # text, so not worth avoiding) but exposes no token count. This second tokenizer,
        # same settings, counts them; its memoised stemmer makes that ~30 us a text.
        self._counter = Bm25Tokenizer(_MemoStemmer(STEM_CACHE_SIZE), words, token_max_length)

    @property
    def name(self) -> str:
        """``"bm25"``."""
        return "bm25"

    @property
    def models(self) -> tuple[str, ...]:
        """The model names this backend answers for."""
        return self._models

    @property
    def description(self) -> str:
        """What the vectors are, plainly."""
        return (
            "BM25 term weights from chromadb's ChromaBm25EmbeddingFunction "
            "(murmur3 hashes of Snowball stems); NOT SPLADE or BGE-M3 vectors"
        )

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
        """Embed `texts` with BM25. `model`, `task`, `target` and `instructions` do not
        change BM25 weights: documents and queries are weighted alike.

        Args:
            texts: The texts, in order.
            model: The requested model name (ignored: one weighting for all).
            task: Ignored.
            target: Ignored.
            instructions: Ignored.
            fetch_labels: Whether to return the stems as labels.

        Returns:
            One item per text (empty for a text with no terms) and the term count.
        """
        if not texts:
            return EmbedOutput([], 0)
        vectors = self._ef(list(texts))
        items = [
            SparseItem(
                indices=list(vec.indices),
                values=[float(v) for v in vec.values],
                # chromadb leaves labels None on an empty vector; [] keeps them aligned.
                labels=list(vec.labels or ()) if fetch_labels else None,
            )
            for vec in vectors
        ]
        num_tokens = sum(len(self._counter.tokenize(text)) for text in texts)
        return EmbedOutput(items, num_tokens)

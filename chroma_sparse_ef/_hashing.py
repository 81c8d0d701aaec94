"""`HashingEmbeddingFunction`: an offline, deterministic, lexical dense embedding.

Feature hashing of words, word bigrams and character n-grams: no weights, no network,
the same vector for the same text on every machine. It is what the dense leg of hybrid
search falls back to when Chroma's default model is not cached (see `_dense.py`).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from ._exceptions import ConfigurationError
from ._inputs import check_input

__all__ = ["DEFAULT_DIMENSIONS", "HASHING_FUNCTION_NAME", "HashingEmbeddingFunction"]

#: Name the hashing function is registered under with chromadb. Persisted in users'
#: collection configurations: never rename it.
HASHING_FUNCTION_NAME = "chroma_sparse_ef_hashing"
#: Same width as all-MiniLM-L6-v2, so either function fits the same collection design.
DEFAULT_DIMENSIONS = 384
#: Character n-gram lengths (fastText's 3-6 range, trimmed: 6-grams add little on
#: short English words and cost a fifth of the hashing time).
CHAR_NGRAM_RANGE = (3, 5)
#: Share of a word's weight carried by its character n-grams: enough for "parse" to
#: find "parser", little enough that exact words still dominate.
CHAR_NGRAM_WEIGHT = 0.5
#: Weight of a word bigram relative to a unigram: phrases sharpen ranking, words carry it.
BIGRAM_WEIGHT = 0.5
#: Bumped if the hashing scheme ever changes, so old collections are refused, not mixed.
HASHING_VERSION = 1
#: Words cached per instance before the cache is cleared (bounds memory on huge corpora).
_WORD_CACHE_SIZE = 200_000

#: Short function words that would otherwise dominate every vector: with no corpus
#: statistics (no IDF), dropping them is what keeps "the" from matching everything.
_STOPWORD_TEXT = """
a about above after again all also an and any are as at be because been before being
below between both but by can could did do does doing down during each either else
few for from further had has have having he her here hers him his how i if in into
is it its itself just me more most my no nor not now of off on once only or other
our out over own same she should so some such than that the their them then there
these they this those through to too under until up very was we were what when where
which while who whom why will with would you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Letters and digits; underscores split words, so ``read_text`` matches "read" and "text".
_WORD_RE = re.compile(r"[^\W_]+")


def _hash(feature: str, dimensions: int) -> tuple[int, float]:
    """Index and sign of one feature: blake2b, stable across processes and platforms.

    Python's `hash()` is salted per process, so it cannot be used for persisted vectors.
    """
    value = int.from_bytes(
        hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little"
    )
    return value % dimensions, 1.0 if value >> 63 else -1.0


def _tokens(text: str, stopwords: bool) -> list[str]:
    words = _WORD_RE.findall(text.lower())
    if stopwords:
        return [w for w in words if w not in _STOPWORDS]
    return words


@register_embedding_function
class HashingEmbeddingFunction(EmbeddingFunction[Documents]):
    """An offline, deterministic, *lexical* dense embedding (feature hashing).

    Each text becomes the signed hashed sum of its lowercase words (sublinear term
    frequency, ``1 + log(tf)``), optionally their word bigrams and character 3-5-grams,
    projected into `dimensions` floats and L2-normalised. Texts that share words (or
    word pieces) are close; texts that share only meaning are not: this is a bag of
    words, not a semantic model, so synonyms and paraphrases do not match. It needs no
    weights and no network, and the same text gives the same vector on every machine.

    Registered with chromadb under ``"chroma_sparse_ef_hashing"``, so a collection
    created with it is reopened by name (import this package first).

    Args:
        dimensions: Length of the vectors. Default 384, the width of all-MiniLM-L6-v2.
        word_bigrams: Add consecutive word pairs (after stopwords are dropped).
        char_ngrams: Add character 3-5-grams of each word, for some fuzzy matching
            (``parse`` and ``parser``, plurals, typos).
        stopwords: Drop common English function words.

    Raises:
        ConfigurationError: `dimensions` is not a positive integer, or a flag is not a
            bool.
    """

    def __init__(
        self,
        *,
        dimensions: int = DEFAULT_DIMENSIONS,
        word_bigrams: bool = True,
        char_ngrams: bool = True,
        stopwords: bool = True,
    ) -> None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise ConfigurationError(f"dimensions must be a positive integer, got {dimensions!r}")
        for key, flag in (
            ("word_bigrams", word_bigrams),
            ("char_ngrams", char_ngrams),
            ("stopwords", stopwords),
        ):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{key} must be a bool, got {flag!r}")
        self._dimensions = dimensions
        self._word_bigrams = word_bigrams
        self._char_ngrams = char_ngrams
        self._stopwords = stopwords
        # word -> (indices, values) of its unigram and character n-gram features. Words
        # repeat across a corpus far more than they are new, so hashing happens once each.
        self._words: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = {}
        self._lock = threading.Lock()

    # -- chromadb's EmbeddingFunction protocol ------------------------------------------

    def __call__(self, input: Documents) -> Embeddings:
        """Embed texts.

        Args:
            input: A non-empty list of strings.

        Returns:
            One float32 vector of length `dimensions` per text, L2-normalised. A text with
            no words (empty, punctuation only) gets a fixed unit vector shared by all such
            texts, never a zero vector (cosine distance is undefined for one).

        Raises:
            InvalidInputError: `input` is not a list of strings (a bare string included).
        """
        matrix = self.embed_matrix(input)
        return list(matrix)

    def embed_query(self, input: Documents) -> Embeddings:
        """Embed queries: the same as `__call__` (the embedding is symmetric)."""
        return self.__call__(input)

    def embed_matrix(self, input: Documents) -> npt.NDArray[np.float32]:
        """Embed texts into one ``(len(input), dimensions)`` float32 matrix.

        Args:
            input: A list of strings.

        Returns:
            The L2-normalised vectors, one row per text.

        Raises:
            InvalidInputError: `input` is not a list of strings.
        """
        texts = check_input(input)
        rows: list[npt.NDArray[np.int64]] = []
        cols: list[npt.NDArray[np.int64]] = []
        vals: list[npt.NDArray[np.float32]] = []
        for row, text in enumerate(texts):
            idx, val = self._features(text)
            rows.append(np.full(idx.shape, row, dtype=np.int64))
            cols.append(idx)
            vals.append(val)
        d = self._dimensions
        flat = np.concatenate(rows) * d + np.concatenate(cols)
        # bincount sums colliding features in one vectorised pass (np.add.at is ~10x slower).
        dense = np.bincount(flat, weights=np.concatenate(vals), minlength=len(texts) * d)
        matrix = dense.reshape(len(texts), d).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = matrix / np.maximum(norms, np.float32(1e-12))
        return out

    @staticmethod
    def name() -> str:
        """The registered name, ``"chroma_sparse_ef_hashing"``, persisted in collections."""
        return HASHING_FUNCTION_NAME

    def default_space(self) -> Space:
        """``"cosine"``: vectors are normalised, so cosine and inner product agree."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """Cosine, inner product and L2 all rank normalised vectors the same way."""
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        """The persisted configuration: every setting that decides the vectors."""
        return {
            "dimensions": self._dimensions,
            "word_bigrams": self._word_bigrams,
            "char_ngrams": self._char_ngrams,
            "stopwords": self._stopwords,
            "hashing_version": HASHING_VERSION,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashingEmbeddingFunction:
        """Rebuild from `get_config()` output.

        Raises:
            ConfigurationError: The config is not one this version wrote.
        """
        HashingEmbeddingFunction.validate_config(config)
        return HashingEmbeddingFunction(
            dimensions=config.get("dimensions", DEFAULT_DIMENSIONS),
            word_bigrams=config.get("word_bigrams", True),
            char_ngrams=config.get("char_ngrams", True),
            stopwords=config.get("stopwords", True),
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Check a config's keys and types.

        Raises:
            ConfigurationError: An unknown key, a wrong type, or another hashing version.
        """
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"config must be a mapping, got {type(config).__name__}")
        allowed = {"dimensions", "word_bigrams", "char_ngrams", "stopwords", "hashing_version"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ConfigurationError(f"unknown {HASHING_FUNCTION_NAME} config keys: {unknown}")
        dims = config.get("dimensions", DEFAULT_DIMENSIONS)
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ConfigurationError(f"dimensions must be a positive integer, got {dims!r}")
        for key in ("word_bigrams", "char_ngrams", "stopwords"):
            if not isinstance(config.get(key, True), bool):
                raise ConfigurationError(f"{key} must be a bool, got {config[key]!r}")
        version = config.get("hashing_version", HASHING_VERSION)
        if version != HASHING_VERSION:
            raise ConfigurationError(
                f"{HASHING_FUNCTION_NAME} hashing_version {version!r} is not supported by "
                f"this version of chroma-sparse-ef (it writes {HASHING_VERSION})"
            )

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        """Refuse every change: each setting moves vectors into another space.

        Raises:
            ConfigurationError: `new_config` changes any setting.
        """
        old = {**self.get_config(), **old_config}
        for key, value in new_config.items():
            if value != old.get(key):
                raise ConfigurationError(
                    f"changing {key!r} of {HASHING_FUNCTION_NAME} is not supported: vectors "
                    "already stored would no longer be comparable; create a new collection"
                )

    @property
    def dimensions(self) -> int:
        """Length of the vectors."""
        return self._dimensions

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dimensions={self._dimensions}, "
            f"word_bigrams={self._word_bigrams}, char_ngrams={self._char_ngrams}, "
            f"stopwords={self._stopwords})"
        )

    # -- features -----------------------------------------------------------------------

    def _features(self, text: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Hashed indices and signed weights of one text's features (unsummed)."""
        words = _tokens(text, self._stopwords)
        if not words:
            # A fixed feature, so empty texts are equal to each other and never zero.
            i, s = _hash("e:", self._dimensions)
            return np.array([i], dtype=np.int64), np.array([s], dtype=np.float32)
        entries = []
        scale = []
        for word, tf in Counter(words).items():
            entries.append(self._word(word))
            scale.append(1.0 + math.log(tf))
        idx = [e[0] for e in entries]
        # One multiply per text, not per word: each word's features share its tf weight.
        val = [
            np.concatenate([e[1] for e in entries])
            * np.repeat(np.array(scale, np.float32), [len(e[0]) for e in entries])
        ]
        if self._word_bigrams and len(words) > 1:
            b_idx, b_val = [], []
            for (first, second), tf in Counter(itertools.pairwise(words)).items():
                i, s = _hash(f"b:{first} {second}", self._dimensions)
                b_idx.append(i)
                b_val.append(s * BIGRAM_WEIGHT * (1.0 + math.log(tf)))
            idx.append(np.array(b_idx, dtype=np.int64))
            val.append(np.array(b_val, dtype=np.float32))
        return np.concatenate(idx), np.concatenate(val)

    def _word(self, word: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        cached = self._words.get(word)
        if cached is not None:
            return cached
        d = self._dimensions
        i, s = _hash(f"w:{word}", d)
        indices, values = [i], [s]
        if self._char_ngrams:
            marked = f"<{word}>"
            grams = {
                marked[k : k + n]
                for n in range(CHAR_NGRAM_RANGE[0], CHAR_NGRAM_RANGE[1] + 1)
                for k in range(len(marked) - n + 1)
            }
            grams.discard(marked)  # the whole word is already the unigram feature
            if grams:
                # Scaled so a word's n-grams together weigh CHAR_NGRAM_WEIGHT, whatever
                # its length: long words must not drown short ones.
                weight = CHAR_NGRAM_WEIGHT / math.sqrt(len(grams))
                for gram in sorted(grams):
                    gi, gs = _hash(f"c:{gram}", d)
                    indices.append(gi)
                    values.append(gs * weight)
        entry = (np.array(indices, dtype=np.int64), np.array(values, dtype=np.float32))
        with self._lock:
            if len(self._words) >= _WORD_CACHE_SIZE:
                self._words.clear()
            self._words[word] = entry
        return entry

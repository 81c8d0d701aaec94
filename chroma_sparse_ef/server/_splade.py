"""`SpladeBackend`: real SPLADE vectors from a local Hugging Face model directory.

SPLADE runs a BERT masked-language model over a text and keeps, for every vocabulary
entry j, ``w_j = max_i log(1 + relu(logit_ij))`` over the text's tokens i (max pooling,
as SPLADE++ and efficient-SPLADE do). Non-zero entries form the sparse vector: vocabulary
ids as indices, wordpieces as labels. Everything runs in float32 numpy (`_bert.py`) on
weights read from ``model.safetensors`` (`_safetensors.py`), with the model's own
``tokenizer.json`` through the `tokenizers` library; numpy and tokenizers come with
chromadb, so no extra and no torch is needed.

A model directory holds ``config.json``, ``model.safetensors`` and ``tokenizer.json``
(or ``vocab.txt``), as ``huggingface-cli download`` leaves them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .._exceptions import ConfigurationError
from ._backends import EmbedOutput, SparseItem
from ._bert import BertConfig, BertMaskedLM
from ._safetensors import SafetensorsFile

__all__ = ["SPLADE_BATCH_SIZE", "SPLADE_MAX_LENGTH", "SpladeBackend", "SpladeEncoder"]

#: Longest input in tokens, [CLS] and [SEP] included: BERT's 512 positions, the limit
#: SPLADE models were trained with (capped lower if the config has fewer positions).
SPLADE_MAX_LENGTH = 512
#: Texts per forward pass. Bounds memory: at 512 tokens, BERT-base's attention scores
#: for 16 texts take 16 x 12 x 512 x 512 x 4 B = 200 MB; larger batches gained little
#: throughput when measured on CPU (BLAS is already busy at 16 x 64 tokens).
SPLADE_BATCH_SIZE = 16

PathLike = str | os.PathLike[str]


def load_tokenizer(model_dir: Path, max_length: int) -> Tokenizer:
    """The model's tokenizer, truncating to `max_length` tokens and never padding.

    Uses ``tokenizer.json``; for older directories with only ``vocab.txt``, builds the
    same BERT WordPiece pipeline `BertTokenizerFast` would (lowercasing unless
    ``tokenizer_config.json`` says ``"do_lower_case": false``).

    Args:
        model_dir: The model directory.
        max_length: Longest encoding, special tokens included.

    Returns:
        The tokenizer.

    Raises:
        ConfigurationError: If neither file is there or the tokenizer cannot be built.
    """
    path = model_dir / "tokenizer.json"
    vocab = model_dir / "vocab.txt"
    if not path.is_file() and not vocab.is_file():
        raise ConfigurationError(f"{model_dir}: no tokenizer.json (or vocab.txt)")
    try:
        tokenizer = (
            Tokenizer.from_file(str(path))
            if path.is_file()
            else _wordpiece_from_vocab(model_dir, vocab)
        )
    except ConfigurationError:
        raise
    except Exception as exc:  # the tokenizers library raises bare Exceptions
        raise ConfigurationError(f"{model_dir}: cannot load the tokenizer: {exc}") from exc
    # The file may carry settings for another use (padding to a fixed length, a shorter
    # truncation); padding is done here, per batch, and must not count as tokens.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def _wordpiece_from_vocab(model_dir: Path, vocab: Path) -> Tokenizer:
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import BertProcessing

    lowercase = True
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        lowercase = bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
    tokenizer = Tokenizer(WordPiece.from_file(str(vocab), unk_token="[UNK]"))
    tokenizer.normalizer = BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = BertPreTokenizer()
    ids = {token: tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]")}
    missing = [token for token, i in ids.items() if i is None]
    if missing:
        raise ConfigurationError(f"{vocab}: no {' or '.join(missing)} token")
    tokenizer.post_processor = BertProcessing(
        ("[SEP]", int(ids["[SEP]"] or 0)), ("[CLS]", int(ids["[CLS]"] or 0))
    )
    return tokenizer


def load_model(model_dir: Path) -> BertMaskedLM:
    """Load ``config.json`` and ``model.safetensors`` from a model directory.

    Args:
        model_dir: The directory.

    Returns:
        The model, weights in memory as float32.

    Raises:
        ConfigurationError: If a file is missing or invalid, or a tensor is missing.
    """
    config = BertConfig.from_file(model_dir / "config.json")
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        if (model_dir / "model.safetensors.index.json").is_file():
            raise ConfigurationError(f"{model_dir}: sharded checkpoints are not supported")
        hint = (
            " (only pytorch_model.bin is there: convert it once with the safetensors "
            "package, e.g. safetensors.torch.save_file)"
            if (model_dir / "pytorch_model.bin").is_file()
            else ""
        )
        raise ConfigurationError(f"{model_dir}: no model.safetensors{hint}")
    return BertMaskedLM(config, SafetensorsFile(weights))


class SpladeEncoder:
    """One SPLADE model: its tokenizer and BERT masked-LM, loaded from a directory.

    Immutable once loaded, so `encode` may run in several threads at once.

    Args:
        model_dir: A Hugging Face model directory (``config.json``,
            ``model.safetensors``, ``tokenizer.json`` or ``vocab.txt``).
        max_length: Longest input in tokens; longer texts are truncated.
        batch_size: Texts per forward pass.

    Raises:
        ConfigurationError: If the directory does not hold a usable BERT masked-LM.
    """

    def __init__(
        self,
        model_dir: PathLike,
        *,
        max_length: int = SPLADE_MAX_LENGTH,
        batch_size: int = SPLADE_BATCH_SIZE,
    ) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ConfigurationError(f"SPLADE model directory {str(self.model_dir)!r} not found")
        if max_length < 2 or batch_size < 1:
            raise ConfigurationError("max_length must be at least 2 and batch_size positive")
        self.model = load_model(self.model_dir)
        self.max_length = min(max_length, self.model.config.max_position_embeddings)
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(self.model_dir, self.max_length)
        vocab_size = self.model.config.vocab_size
        # Ids the tokenizer does not know (a vocabulary padded for speed) get "" labels.
        self._labels = [self.tokenizer.id_to_token(i) or "" for i in range(vocab_size)]
        for token, i in self.tokenizer.get_vocab(with_added_tokens=True).items():
            if i >= vocab_size:
                raise ConfigurationError(
                    f"{self.model_dir}: tokenizer id {i} ({token!r}) is outside the model's "
                    f"vocabulary of {vocab_size}"
                )

    def encode(self, texts: Sequence[str], *, fetch_labels: bool) -> EmbedOutput:
        """SPLADE vectors for `texts`.

        Texts are sorted by length and run in batches of `batch_size`, so padding stays
        small; padding is masked out and changes no vector.

        Args:
            texts: The texts, in order.
            fetch_labels: Whether to return the wordpieces as labels.

        Returns:
            One item per text (indices ascending, values positive) and the number of
            tokens encoded, special tokens included, padding not.
        """
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        # Only a text with no tokens at all (a tokenizer without [CLS]/[SEP]) stays empty.
        items = [SparseItem([], [], [] if fetch_labels else None) for _ in ids]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = [i for i in order[start : start + self.batch_size] if len(ids[i])]
            if not chunk:
                continue
            length = max(len(ids[i]) for i in chunk)
            batch_ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.bool_)
            for row, i in enumerate(chunk):
                batch_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = True
            hidden = self.model.hidden_states(batch_ids, mask)
            for row, i in enumerate(chunk):
                items[i] = self._pool(hidden[row, : len(ids[i])], fetch_labels)
        return EmbedOutput(items, sum(len(i) for i in ids))

    def _pool(self, hidden: np.ndarray, fetch_labels: bool) -> SparseItem:
        # The MLM head runs per text, on real tokens only: a batch's logits would take
        # batch x length x vocab floats (1 GB for 16 x 512 x 30522).
        logits = self.model.mlm_logits(hidden)
        # log(1 + relu(.)) is non-decreasing, so the max may be taken on the logits.
        weights = np.log1p(np.maximum(logits.max(axis=0), np.float32(0.0)))
        indices = np.flatnonzero(weights > 0)
        return SparseItem(
            indices=indices.tolist(),
            values=weights[indices].astype(float).tolist(),
            labels=[self._labels[j] for j in indices] if fetch_labels else None,
        )


class SpladeBackend:
    """SPLADE vectors computed locally from model weights on disk.

    Indices are the model's vocabulary ids, values SPLADE weights (max-pooled
    ``log(1 + relu(MLM logits))``), labels the wordpieces: the vectors the hosted
    service returns for the same weights, up to float32 rounding. `task`, `target` and
    `instructions` change nothing: SPLADE++ encodes documents and queries alike, and
    efficient-SPLADE's query encoder is a model of its own (its ``-query`` name), served
    from its own directory via `from_dirs`.

    `num_tokens` counts the tokens the model read: wordpieces after truncation to
    `max_length`, [CLS] and [SEP] included, padding not.

    Put it before the BM25 backend, so its models get SPLADE and the rest BM25::

        create_app(backends=[SpladeBackend("/models/splade_pp",
                                           models=("prithivida/Splade_PP_en_v1",)),
                             Bm25Backend()])

    Args:
        model_dir: A Hugging Face BERT masked-LM directory (``config.json``,
            ``model.safetensors``, ``tokenizer.json``).
        models: Model names this directory serves.
        name: Backend name for ``/healthz`` and the response header; unique per app.
        max_length: Longest input in tokens; longer texts are truncated.
        batch_size: Texts per forward pass.

    Raises:
        ConfigurationError: If `models` is empty or the directory cannot be loaded
            (the message names the missing file or tensor).
    """

    def __init__(
        self,
        model_dir: PathLike,
        *,
        models: Iterable[str],
        name: str = "splade",
        max_length: int = SPLADE_MAX_LENGTH,
        batch_size: int = SPLADE_BATCH_SIZE,
    ) -> None:
        names = tuple(dict.fromkeys(models))
        if not names:
            raise ConfigurationError("SpladeBackend needs at least one model name to serve")
        encoder = SpladeEncoder(model_dir, max_length=max_length, batch_size=batch_size)
        self._setup(name, dict.fromkeys(names, encoder))

    @classmethod
    def from_dirs(
        cls,
        dirs: Mapping[str, PathLike],
        *,
        name: str = "splade",
        max_length: int = SPLADE_MAX_LENGTH,
        batch_size: int = SPLADE_BATCH_SIZE,
    ) -> SpladeBackend:
        """One backend for several models, each from its own directory.

        For efficient-SPLADE, whose document and query encoders are different models::

            SpladeBackend.from_dirs({
                "naver/efficient-splade-VI-BT-large-doc": "/models/esplade-doc",
                "naver/efficient-splade-VI-BT-large-query": "/models/esplade-query",
            })

        Models mapped to the same directory share one copy of the weights.

        Args:
            dirs: Model name to model directory.
            name: Backend name; unique per app.
            max_length: Longest input in tokens.
            batch_size: Texts per forward pass.

        Returns:
            The backend.

        Raises:
            ConfigurationError: If `dirs` is empty or a directory cannot be loaded.
        """
        if not dirs:
            raise ConfigurationError("SpladeBackend needs at least one model name to serve")
        loaded: dict[Path, SpladeEncoder] = {}
        encoders: dict[str, SpladeEncoder] = {}
        for model, directory in dirs.items():
            key = Path(directory).resolve()
            if key not in loaded:
                loaded[key] = SpladeEncoder(directory, max_length=max_length, batch_size=batch_size)
            encoders[model] = loaded[key]
        backend = cls.__new__(cls)
        backend._setup(name, encoders)
        return backend

    def _setup(self, name: str, encoders: dict[str, SpladeEncoder]) -> None:
        if not name:
            raise ConfigurationError("a backend name must not be empty")
        self._name = name
        self._encoders = encoders

    @property
    def name(self) -> str:
        """The name given, ``"splade"`` by default."""
        return self._name

    @property
    def models(self) -> tuple[str, ...]:
        """The model names this backend answers for."""
        return tuple(self._encoders)

    @property
    def description(self) -> str:
        """What the vectors are and where the weights came from."""
        dirs = list(dict.fromkeys(str(e.model_dir) for e in self._encoders.values()))
        if len(dirs) == 1:
            return f"SPLADE max-pooled MLM weights from {dirs[0]} (numpy, float32)"
        where = "; ".join(f"{m} from {e.model_dir}" for m, e in self._encoders.items())
        return f"SPLADE max-pooled MLM weights (numpy, float32): {where}"

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
        """Embed `texts` with the SPLADE model serving `model`.

        Args:
            texts: The texts, in order.
            model: The requested model name, one of `models`.
            task: Ignored (SPLADE takes no instructions).
            target: Ignored (queries use the query model's own name, if it has one).
            instructions: Ignored.
            fetch_labels: Whether to return the wordpieces as labels.

        Returns:
            One item per text and the number of tokens encoded.

        Raises:
            KeyError: If `model` is not one of `models` (routing never lets that happen).
        """
        if not texts:
            return EmbedOutput([], 0)
        return self._encoders[model].encode(texts, fetch_labels=fetch_labels)

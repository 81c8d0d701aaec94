"""The dense leg of hybrid search, offline.

Chroma's default dense function (`DefaultEmbeddingFunction`, ONNX all-MiniLM-L6-v2)
downloads its model on first use. This package never downloads anything, so
`default_dense_function` uses Chroma's default only when its model files are already in
chromadb's cache, and otherwise falls back to `HashingEmbeddingFunction`, an offline
*lexical* dense embedding, saying which one it chose and why.

Override the choice with the ``CHROMA_SPARSE_EF_DENSE`` environment variable or the
`prefer` argument: ``auto`` (default), ``default`` (Chroma's model; chromadb downloads it
on first use if it is not cached) or ``hashing``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chromadb.api.types import DefaultEmbeddingFunction, Documents, EmbeddingFunction

from ._exceptions import ConfigurationError
from ._hashing import HashingEmbeddingFunction

__all__ = [
    "CHROMA_DEFAULT_MODEL_FILES",
    "DENSE_ENV_VAR",
    "DenseChoice",
    "DensePreference",
    "HashingEmbeddingFunction",
    "chroma_default_model_dir",
    "default_dense_function",
]

#: Environment variable that overrides `default_dense_function`'s choice.
DENSE_ENV_VAR = "CHROMA_SPARSE_EF_DENSE"
#: The files chromadb's ONNXMiniLM_L6_V2 checks before deciding to download
#: (`_download_model_if_not_exists` in chromadb 1.5.9, onnx_mini_lm_l6_v2.py).
CHROMA_DEFAULT_MODEL_FILES = (
    "config.json",
    "model.onnx",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.txt",
)
#: Name of Chroma's default dense model, for messages.
CHROMA_DEFAULT_MODEL = "all-MiniLM-L6-v2"

#: What `default_dense_function` accepts as `prefer`.
DensePreference = Literal["auto", "default", "hashing"]


@dataclass(frozen=True, slots=True)
class DenseChoice:
    """The dense function chosen for a run, and why.

    Attributes:
        function: The chromadb embedding function to use.
        name: What ran, for humans (``"all-MiniLM-L6-v2 (Chroma's default)"`` or
            ``"offline hashing embedding (lexical, not semantic)"``).
        reason: Why it was chosen, in one sentence, for the output of demos and notebooks.
        kind: ``"default"`` (Chroma's model) or ``"hashing"`` (`HashingEmbeddingFunction`).
    """

    function: EmbeddingFunction[Documents]
    name: str
    reason: str
    kind: Literal["default", "hashing"]

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def chroma_default_model_dir() -> Path:
    """Where chromadb keeps all-MiniLM-L6-v2's extracted files (nothing is downloaded).

    Read from chromadb's `ONNXMiniLM_L6_V2.DOWNLOAD_PATH` at call time, so it follows
    chromadb (and tests that point it at a temporary folder).
    """
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    return Path(ONNXMiniLM_L6_V2.DOWNLOAD_PATH) / ONNXMiniLM_L6_V2.EXTRACTED_FOLDER_NAME


def _missing_runtime() -> list[str]:
    # find_spec, not import: onnxruntime takes a second to import and is only needed
    # when the default model actually runs.
    return [m for m in ("onnxruntime", "tokenizers") if importlib.util.find_spec(m) is None]


def default_dense_function(
    prefer: DensePreference | None = None, *, cache_dir: Path | None = None
) -> DenseChoice:
    """Choose the dense function: Chroma's default if it can run offline, else hashing.

    Never downloads, and never loads the model either: it only checks that the files
    chromadb would look for are there.

    Args:
        prefer: ``"auto"``: Chroma's default when its model is cached and its runtime is
            installed, else `HashingEmbeddingFunction`. ``"default"``: Chroma's default
            regardless (if the model is not cached, *chromadb* downloads it on first
            use). ``"hashing"``: `HashingEmbeddingFunction`. None: the
            ``CHROMA_SPARSE_EF_DENSE`` environment variable, else ``"auto"``.
        cache_dir: The folder holding the extracted model files; default
            `chroma_default_model_dir()`.

    Returns:
        The function, a name for it and the reason it was chosen.

    Raises:
        ConfigurationError: `prefer` (or the environment variable) is not one of
            ``auto``, ``default``, ``hashing``.
    """
    if prefer is None:
        env = os.environ.get(DENSE_ENV_VAR, "").strip().lower()
        prefer_value: str = env or "auto"
        source = f"{DENSE_ENV_VAR}={env}" if env else ""
    else:
        prefer_value = prefer
        source = f"prefer={prefer!r}"
    if prefer_value not in ("auto", "default", "hashing"):
        where = f"{DENSE_ENV_VAR}" if prefer is None else "prefer"
        raise ConfigurationError(
            f"{where} must be 'auto', 'default' or 'hashing', got {prefer_value!r}"
        )
    folder = cache_dir if cache_dir is not None else chroma_default_model_dir()
    missing = [f for f in CHROMA_DEFAULT_MODEL_FILES if not (folder / f).is_file()]
    default_name = f"{CHROMA_DEFAULT_MODEL} (Chroma's default)"
    hashing_name = "offline hashing embedding (lexical, not semantic)"

    if prefer_value == "hashing":
        return DenseChoice(
            HashingEmbeddingFunction(), hashing_name, f"chosen by {source}", "hashing"
        )
    if prefer_value == "default":
        reason = f"chosen by {source}"
        if missing:
            reason += (
                f"; its model is not cached at {folder}, so chromadb will download it on first use"
            )
        return DenseChoice(DefaultEmbeddingFunction(), default_name, reason, "default")
    if missing:
        return DenseChoice(
            HashingEmbeddingFunction(),
            hashing_name,
            f"Chroma's default model ({CHROMA_DEFAULT_MODEL}) is not cached at {folder} "
            "and this package never downloads; set "
            f"{DENSE_ENV_VAR}=default to let chromadb download it",
            "hashing",
        )
    runtime = _missing_runtime()
    if runtime:
        return DenseChoice(
            HashingEmbeddingFunction(),
            hashing_name,
            f"Chroma's default model is cached at {folder} but {', '.join(runtime)} "
            "is not installed",
            "hashing",
        )
    return DenseChoice(
        DefaultEmbeddingFunction(),
        default_name,
        f"its model is cached at {folder}",
        "default",
    )

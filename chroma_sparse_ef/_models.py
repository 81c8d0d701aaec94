"""The catalog of models Chroma's embedding service hosts, and what each can do.

The five names are the `x-chroma-embedding-model` enum of `spec/embed_sparse.openapi.yaml`.
Other names are accepted (self-hosted servers may serve more); the catalog only adds
knowledge where it has it: which models are dense-only, and which have a query twin.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelInfo", "model_info"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the catalog knows about one hosted model.

    Attributes:
        name: The model name sent in `x-chroma-embedding-model`.
        sparse: Whether the model produces sparse vectors (`/embed_sparse` serves it).
        query_model: The model to embed queries with, when it differs from `name`
            (efficient-SPLADE ships separate document and query encoders).
        description: One line for humans (CLI listings, docs).
    """

    name: str
    sparse: bool
    query_model: str | None = None
    description: str = ""


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            "prithivida/Splade_PP_en_v1",
            sparse=True,
            description="SPLADE++ (English); one encoder for documents and queries.",
        ),
        ModelInfo(
            "BAAI/bge-m3",
            sparse=True,
            description="BGE-M3 lexical weights (multilingual); one encoder for both sides.",
        ),
        ModelInfo(
            "naver/efficient-splade-VI-BT-large-doc",
            sparse=True,
            query_model="naver/efficient-splade-VI-BT-large-query",
            description="efficient-SPLADE document encoder; queries use its -query twin.",
        ),
        ModelInfo(
            "naver/efficient-splade-VI-BT-large-query",
            sparse=True,
            description="efficient-SPLADE query encoder (the twin of the -doc model).",
        ),
        ModelInfo(
            "Qwen/Qwen3-Embedding-0.6B",
            sparse=False,
            description="Dense-only: /embed_sparse answers 501 for it.",
        ),
    )
}

#: Same default as chromadb's own `ChromaCloudSpladeEmbeddingFunction`.
DEFAULT_MODEL = "prithivida/Splade_PP_en_v1"


def model_info(name: str) -> ModelInfo | None:
    """Return the catalog entry for `name`, or None for a model the catalog does not know."""
    return MODELS.get(name)

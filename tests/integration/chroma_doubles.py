"""Test doubles shared by the integration tests: no mocks of chromadb's own objects.

`RecordingServer` stands in for chromadb's ServerAPI (the part that would send HTTP to a
Chroma server), so a real `Collection` runs all its client-side code and only the final
call is recorded. `HashEmbedding` is a deterministic offline dense function, so chromadb
never downloads its default model.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, SearchResult

DIMS = 64


class HashEmbedding(EmbeddingFunction[Documents]):
    """Deterministic offline dense embeddings: word tokens hashed into 64 dims, L2-normalised."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:
        out = []
        for text in input:
            vector = np.zeros(DIMS, dtype=np.float32)
            for word in re.findall(r"\w+", text.lower()):
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMS] += 1.0
            norm = float(np.linalg.norm(vector))
            out.append(vector / norm if norm else vector)
        return out


class RecordingServer:
    """Stands in for chromadb's ServerAPI: records each call, answers searches."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.search_rows: list[dict[str, Any]] = []

    def _record(self, name: str, kwargs: dict[str, Any]) -> bool:
        self.calls.append((name, kwargs))
        return True

    def _add(self, **kwargs: Any) -> bool:
        return self._record("add", kwargs)

    def _upsert(self, **kwargs: Any) -> bool:
        return self._record("upsert", kwargs)

    def _update(self, **kwargs: Any) -> bool:
        return self._record("update", kwargs)

    def _delete(self, **kwargs: Any) -> None:
        self._record("delete", kwargs)

    def _count(self, **kwargs: Any) -> int:
        return 0

    def _search(self, **kwargs: Any) -> SearchResult:
        self._record("search", kwargs)
        rows = self.search_rows
        return SearchResult(
            ids=[[r["id"] for r in rows]],
            documents=[[r.get("document") for r in rows]],
            metadatas=[[r.get("metadata") for r in rows]],
            scores=[[r.get("score") for r in rows]],
            embeddings=None,
            select=[["#document", "#metadata", "#score"]],
        )

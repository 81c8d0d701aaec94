"""Which backend answers for which model, decided once when the app is built."""

from __future__ import annotations

from collections.abc import Sequence

from .._exceptions import ConfigurationError
from .._models import MODELS
from ._backends import EmbedOutput, SparseBackend
from ._problems import HTTPProblem
from ._settings import MAX_QUOTED_HEADER

__all__ = ["BackendRouter"]


class BackendRouter:
    """Maps model names to backends: the first backend listing a model serves it.

    So ``[splade_backend, Bm25Backend()]`` serves SPLADE weights for the models the first
    one loaded and BM25 for the rest.

    Args:
        backends: Backends in order of preference.

    Raises:
        ConfigurationError: If there are no backends, two share a name, or one claims a
            model the catalog does not know or knows as dense-only.
    """

    def __init__(self, backends: Sequence[SparseBackend]) -> None:
        if not backends:
            raise ConfigurationError("the server needs at least one backend")
        names = [backend.name for backend in backends]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"backend names must be unique, got {names}")
        self.backends = tuple(backends)
        self._routes: dict[str, SparseBackend] = {}
        for backend in backends:
            for model in backend.models:
                info = MODELS.get(model)
                if info is None:
                    raise ConfigurationError(
                        f"backend {backend.name!r} claims unknown model {model!r}; "
                        f"known models: {', '.join(MODELS)}"
                    )
                if not info.sparse:
                    raise ConfigurationError(
                        f"backend {backend.name!r} claims {model!r}, which is dense-only"
                    )
                self._routes.setdefault(model, backend)

    def routes(self) -> dict[str, str | None]:
        """Every catalog model and the name of the backend serving it (None if none)."""
        return {
            model: (self._routes[model].name if model in self._routes else None) for model in MODELS
        }

    def resolve(self, model: str | None) -> SparseBackend:
        """The backend for `model`, or the error the hosted service would give.

        Args:
            model: The `x-chroma-embedding-model` header, if sent.

        Returns:
            The backend serving it.

        Raises:
            HTTPProblem: 400 if the header is missing or names an unknown model; 501 for
                a dense-only model or a sparse one no backend here serves.
        """
        if model is None:
            raise HTTPProblem(400, "missing x-chroma-embedding-model header")
        info = MODELS.get(model)
        if info is None:
            quoted = model if len(model) <= MAX_QUOTED_HEADER else model[:MAX_QUOTED_HEADER] + "..."
            raise HTTPProblem(400, f"unsupported model {quoted!r}; supported: {', '.join(MODELS)}")
        if not info.sparse:
            raise HTTPProblem(
                501, f"model {model!r} does not support sparse embeddings (dense-only)"
            )
        backend = self._routes.get(model)
        if backend is None:
            raise HTTPProblem(501, f"model {model!r} is not served by this local server")
        return backend


def check_output(output: EmbedOutput, expected: int, backend: SparseBackend) -> EmbedOutput:
    """Refuse a backend answer with the wrong number of items (a bug, never sent on).

    Args:
        output: What the backend returned.
        expected: Number of texts sent to it.
        backend: The backend, for the message.

    Returns:
        `output`, unchanged.

    Raises:
        HTTPProblem: 500 if the count is wrong.
    """
    if len(output.items) != expected:
        raise HTTPProblem(
            500,
            f"backend {backend.name!r} returned {len(output.items)} vectors for {expected} texts",
        )
    return output

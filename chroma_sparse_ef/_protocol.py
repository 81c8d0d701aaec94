"""The wire format of `POST /embed_sparse`: request bodies, response validation, errors.

Pure functions, no I/O: the sync and async clients share every decision made here.
The contract is `spec/embed_sparse.openapi.yaml`. A response is either exactly right or
it raises `InvalidResponseError`: nothing partial or silently wrong is ever returned.

Duplicate indices inside one item are rejected, not merged: a sparse vector maps each
index to one weight, so two weights for one index mean the service is broken, and summing
or keeping the larger would change scores without anyone noticing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from chromadb.base_types import SparseVector

from ._chroma_compat import trusted_sparse_vector
from ._exceptions import (
    APIStatusError,
    AuthenticationError,
    InternalServerError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitError,
    UnsupportedModelError,
)
from ._models import MODELS, model_info
from ._sparse_checks import (
    FLOAT32_MAX,
    INDEX_RANGE_TEXT,
    MAX_SPARSE_INDEX,
    SparseVectorError,
    to_finite_float32,
)

__all__ = [
    "build_body",
    "error_for_status",
    "parse_response",
    "scrub",
]

#: How much of a non-JSON error body to quote in a message.
_MAX_QUOTED_BODY = 300


def build_body(
    texts: Sequence[str],
    *,
    fetch_labels: bool,
    task: str | None = None,
    target: str | None = None,
    instructions: str | None = None,
) -> bytes:
    """Serialise one request body exactly as the spec describes it.

    The spec requires either `instructions`, or both `task` and `target`. With
    instructions they are sent alone; otherwise `task` and `target` are sent, as empty
    strings when unset, which is what Chroma's own clients send and the service accepts.

    Args:
        texts: The texts of this request (at most the service's cap).
        fetch_labels: Whether to ask for token labels.
        task: The task name, or None.
        target: ``"documents"`` or ``"query"`` when a task is set, else None.
        instructions: Free-form instructions, or None.

    Returns:
        The JSON body as bytes.
    """
    body: dict[str, Any] = {"texts": list(texts), "fetch_labels": fetch_labels}
    if instructions is not None:
        body["instructions"] = instructions
    else:
        body["task"] = task or ""
        body["target"] = target or ""
    return orjson.dumps(body)


def parse_response(
    content: bytes, *, expected: int, fetch_labels: bool, model: str
) -> tuple[list[SparseVector], int]:
    """Validate a 2xx body and convert it to chromadb `SparseVector`s.

    Args:
        content: The raw response body.
        expected: How many texts were sent; exactly this many items must come back.
        fetch_labels: Whether labels were asked for. If so, every item must carry
            labels aligned with its indices; if not, labels are ignored.
        model: For error messages.

    Returns:
        The vectors, in request order, indices strictly ascending with values and
        labels permuted alongside; and the response's `num_tokens`.

    Raises:
        InvalidResponseError: the body is not JSON, misses a field, has the wrong
            number of items, or any item is malformed.
    """
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise _invalid(model, f"the body is not valid JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise _invalid(model, f"expected a JSON object, got {type(payload).__name__}")
    embeddings = payload.get("embeddings")
    if not isinstance(embeddings, list):
        raise _invalid(model, "'embeddings' is missing or not a list")
    if len(embeddings) != expected:
        raise _invalid(model, f"sent {expected} texts but got {len(embeddings)} embeddings")
    num_tokens = payload.get("num_tokens")
    if type(num_tokens) is not int or num_tokens < 0:
        raise _invalid(model, f"'num_tokens' must be a non-negative integer, got {num_tokens!r}")
    vectors = [_to_vector(item, pos, fetch_labels, model) for pos, item in enumerate(embeddings)]
    return vectors, num_tokens


def _to_vector(item: Any, pos: int, fetch_labels: bool, model: str) -> SparseVector:
    if not isinstance(item, dict):
        raise _invalid(model, f"embeddings[{pos}] is not an object")
    indices = item.get("indices")
    values = item.get("values")
    if not isinstance(indices, list) or not isinstance(values, list):
        raise _invalid(model, f"embeddings[{pos}] needs 'indices' and 'values' lists")
    n = len(indices)
    if len(values) != n:
        raise _invalid(model, f"embeddings[{pos}] has {n} indices but {len(values)} values")
    labels: list[str] | None = None
    if fetch_labels:
        raw_labels = item.get("labels")
        if not isinstance(raw_labels, list):
            raise _invalid(model, f"embeddings[{pos}] has no 'labels' although they were asked for")
        if len(raw_labels) != n:
            raise _invalid(model, f"embeddings[{pos}] has {n} indices but {len(raw_labels)} labels")
        labels = raw_labels
    if n == 0:
        return _make_vector([], [], labels)

    # Checked on the Python objects: numpy would quietly turn True into 1 and 3.0 into 3,
    # and the contract says those are errors. `list(map(type, ...)).count` is the fastest
    # exact check found (3 us per 200 items; see bench/bench_embedding_function.py).
    if list(map(type, indices)).count(int) != n:
        raise _invalid(model, f"embeddings[{pos}] has an index that is not an integer")
    value_types = list(map(type, values))
    n_float = value_types.count(float)
    if n_float != n:
        if n_float + value_types.count(int) != n:
            raise _invalid(model, f"embeddings[{pos}] has a value that is not a number")
        values = [float(v) for v in values]
    # One sum screens all values (1 us); only a non-finite sum, which finite values can
    # also reach by overflowing, pays for the exact element-wise check.
    if not math.isfinite(sum(values)) and not all(map(math.isfinite, values)):
        raise _invalid(model, f"embeddings[{pos}] has a value that is not finite")
    # Finite as a Python float is not enough: Chroma and the local index store float32, so
    # the same rule as theirs (`_sparse_checks`) applies; only a value past float32's range
    # pays for the exact test.
    if max(values) > FLOAT32_MAX or min(values) < -FLOAT32_MAX:
        try:
            to_finite_float32(np.asarray(values, dtype=np.float64))
        except SparseVectorError as exc:
            raise _invalid(model, f"embeddings[{pos}] has a {exc.reason}") from None
    if labels is not None and list(map(type, labels)).count(str) != n:
        raise _invalid(model, f"embeddings[{pos}] has a label that is not a string")

    ordered = sorted(indices)
    if ordered[0] < 0 or ordered[-1] > MAX_SPARSE_INDEX:
        raise _invalid(model, f"embeddings[{pos}] has an index outside {INDEX_RANGE_TEXT}")
    if ordered != indices:
        order = np.argsort(np.array(indices, dtype=np.int64), kind="stable").tolist()
        values = [values[i] for i in order]
        if labels is not None:
            labels = [labels[i] for i in order]
    if len(set(ordered)) != n:
        dup = next(a for a, b in itertools.pairwise(ordered) if a == b)
        raise _invalid(model, f"embeddings[{pos}] repeats index {dup}")
    return _make_vector(ordered, values, labels)


def _make_vector(indices: list[int], values: list[float], labels: list[str] | None) -> SparseVector:
    # Everything SparseVector.__post_init__ checks (list types, equal lengths, int and
    # non-negative indices, numeric values, strict ascending order) was checked above with
    # numpy; its per-element Python loops cost ~27 us for 200 nonzeros, more than all of
    # the rest of parsing. So the instance is built without running them again.
    return trusted_sparse_vector(indices, values, labels)


def _invalid(model: str, detail: str) -> InvalidResponseError:
    return InvalidResponseError(f"invalid response for model {model!r}: {detail}", model=model)


def scrub(text: str, secret: str | None) -> str:
    """Remove every occurrence of `secret` from `text` (no-op without a secret)."""
    if secret:
        return text.replace(secret, "[redacted]")
    return text


def error_text(content: bytes) -> str:
    """The service's `error` text from an error body, or a short quote of a non-JSON body."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    text = content[:_MAX_QUOTED_BODY].decode("utf-8", errors="replace").strip()
    return text or "(empty body)"


def error_for_status(
    status: int,
    content: bytes,
    *,
    model: str,
    api_key: str | None,
    api_key_env_var: str,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> APIStatusError:
    """Build the typed error for an error status. The API key never reaches the message.

    Args:
        status: The HTTP status code (not 2xx).
        content: The response body.
        model: The model the request was for.
        api_key: The key, only to scrub it from the service's text.
        api_key_env_var: Named in the 401 hint.
        retry_after: The service's Retry-After hint in seconds, for `RateLimitError`.
        request_id: The response's ``x-request-id``, kept on the error for support.

    Returns:
        An `APIStatusError` subclass matching the status.
    """
    error = scrub(error_text(content), api_key)
    where = f"model {model!r}"
    if status == 400:
        hint = ""
        if model_info(model) is None:
            hint = (
                f" ({model!r} is not one of the hosted models: {', '.join(sorted(MODELS))};"
                " check the name, or point base_url at a server that serves it)"
            )
        return InvalidRequestError(
            f"the service rejected the request for {where} (400): {error}{hint}",
            status_code=status,
            error=error,
            model=model,
            request_id=request_id,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"authentication failed for {where} ({status}): {error}; check the API key "
            f"(passed as api_key, or in the {api_key_env_var} environment variable)",
            status_code=status,
            error=error,
            model=model,
            request_id=request_id,
        )
    if status == 413:
        return InvalidRequestError(
            f"a single text is too large for the service ({where}, 413): {error}",
            status_code=status,
            error=error,
            model=model,
            request_id=request_id,
        )
    if status == 429:
        suffix = "" if retry_after is None else f"; the service asks to wait {retry_after:g} s"
        return RateLimitError(
            f"rate limited for {where} (429): {error}{suffix}",
            status_code=status,
            error=error,
            model=model,
            request_id=request_id,
            retry_after=retry_after,
        )
    if status == 501:
        return UnsupportedModelError(
            f"{where} does not produce sparse embeddings (501): {error}",
            status_code=status,
            error=error,
            model=model,
            request_id=request_id,
        )
    if status >= 500 or status == 408:
        return InternalServerError(
            f"the service failed for {where} ({status}): {error}",
            status_code=status,
            error=error,
            model=model,
            request_id=request_id,
        )
    if status == 404:
        return InvalidRequestError(
            f"no /embed_sparse endpoint here ({where}, 404): {error}; check base_url",
            status_code=status,
            error=error,
            model=model,
            request_id=request_id,
        )
    if 400 <= status < 500:
        return InvalidRequestError(
            f"the service rejected the request for {where} ({status}): {error}",
            status_code=status,
            error=error,
            model=model,
            request_id=request_id,
        )
    return APIStatusError(
        f"unexpected status {status} for {where}: {error}",
        status_code=status,
        error=error,
        model=model,
        request_id=request_id,
    )

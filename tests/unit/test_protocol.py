"""Wire format: request bodies, strict response validation, status -> typed error."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from chromadb.base_types import SparseVector

from chroma_sparse_ef import (
    APIStatusError,
    AuthenticationError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitError,
    ServiceError,
    UnsupportedModelError,
)
from chroma_sparse_ef._exceptions import InternalServerError
from chroma_sparse_ef._protocol import build_body, error_for_status, parse_response


def _body(items: list[Any], num_tokens: Any = 3) -> bytes:
    return orjson.dumps({"embeddings": items, "num_tokens": num_tokens})


def _parse(content: bytes, expected: int = 1, labels: bool = False) -> list[SparseVector]:
    return parse_response(content, expected=expected, fetch_labels=labels, model="m")[0]


class TestBuildBody:
    def test_without_task_or_instructions_sends_empty_task_and_target(self) -> None:
        """No task and no instructions: task "" and target "", as Chroma's clients send."""
        body = orjson.loads(build_body(["a"], fetch_labels=False))
        assert body == {"texts": ["a"], "fetch_labels": False, "task": "", "target": ""}

    def test_task_and_target_are_sent_together(self) -> None:
        """A task travels with its target."""
        body = orjson.loads(build_body(["a"], fetch_labels=True, task="retrieval", target="query"))
        assert body == {
            "texts": ["a"],
            "fetch_labels": True,
            "task": "retrieval",
            "target": "query",
        }

    def test_instructions_are_sent_alone(self) -> None:
        """Instructions replace task and target (the spec's anyOf)."""
        body = orjson.loads(build_body(["a"], fetch_labels=False, instructions="Find docs"))
        assert body == {"texts": ["a"], "fetch_labels": False, "instructions": "Find docs"}

    def test_fetch_labels_is_a_json_boolean(self) -> None:
        """The spec's field is boolean fetch_labels, not chromadb's string fetch_tokens."""
        raw = build_body(["a"], fetch_labels=True)
        assert b'"fetch_labels":true' in raw
        assert b"fetch_tokens" not in raw


class TestParseResponse:
    def test_unsorted_indices_are_sorted_with_values_and_labels_aligned(self) -> None:
        """Sorting keeps each index with its own value and label."""
        item = {"indices": [30, 10, 20], "values": [3.0, 1.0, 2.0], "labels": ["c", "a", "b"]}
        (vec,) = _parse(_body([item]), labels=True)
        assert vec == SparseVector(
            indices=[10, 20, 30], values=[1.0, 2.0, 3.0], labels=["a", "b", "c"]
        )

    def test_sorted_input_is_returned_as_is(self) -> None:
        """Already-sorted items come back unchanged."""
        item = {"indices": [1, 5, 9], "values": [0.5, 0.25, 0.125]}
        (vec,) = _parse(_body([item]))
        assert (vec.indices, vec.values, vec.labels) == ([1, 5, 9], [0.5, 0.25, 0.125], None)

    def test_vectors_pass_chromadbs_own_validation(self) -> None:
        """What we build without __post_init__ is exactly what SparseVector accepts."""
        item = {"indices": [7, 3, 5], "values": [1, 2.5, 3], "labels": ["x", "y", "z"]}
        (vec,) = _parse(_body([item]), labels=True)
        rebuilt = SparseVector(indices=vec.indices, values=vec.values, labels=vec.labels)
        assert rebuilt == vec
        assert all(type(v) is float for v in vec.values)

    def test_empty_item_is_a_valid_empty_vector(self) -> None:
        """A text with no nonzero terms yields an empty vector, not an error."""
        (vec,) = _parse(_body([{"indices": [], "values": [], "labels": []}]), labels=True)
        assert (vec.indices, vec.values, vec.labels) == ([], [], [])

    def test_labels_are_ignored_when_not_requested(self) -> None:
        """Labels the client did not ask for are dropped, not validated."""
        (vec,) = _parse(_body([{"indices": [1], "values": [1.0], "labels": None}]))
        assert vec.labels is None

    def test_num_tokens_is_returned(self) -> None:
        """num_tokens is passed through for usage accounting."""
        _, tokens = parse_response(
            _body([{"indices": [1], "values": [1.0]}], num_tokens=42),
            expected=1,
            fetch_labels=False,
            model="m",
        )
        assert tokens == 42

    @pytest.mark.parametrize(
        ("content", "expected", "labels", "fragment"),
        [
            (b"not json", 1, False, "not valid JSON"),
            (b"[1, 2]", 1, False, "JSON object"),
            (orjson.dumps({"num_tokens": 1}), 1, False, "'embeddings'"),
            (orjson.dumps({"embeddings": []}), 0, False, "num_tokens"),
            (_body([], num_tokens=True), 0, False, "num_tokens"),
            (_body([], num_tokens=-1), 0, False, "num_tokens"),
            (_body([{"indices": [1], "values": [1.0]}]), 2, False, "sent 2 texts but got 1"),
            (_body(["x"]), 1, False, "not an object"),
            (_body([{"values": [1.0]}]), 1, False, "'indices' and 'values'"),
            (_body([{"indices": [1, 2], "values": [1.0]}]), 1, False, "2 indices but 1 values"),
            (_body([{"indices": [1], "values": [1.0]}]), 1, True, "no 'labels'"),
            (
                _body([{"indices": [1], "values": [1.0], "labels": []}]),
                1,
                True,
                "1 indices but 0 labels",
            ),
            (
                _body([{"indices": [1], "values": [1.0], "labels": [3]}]),
                1,
                True,
                "label that is not a string",
            ),
            (_body([{"indices": [-1], "values": [1.0]}]), 1, False, "outside [0, 2**32)"),
            (_body([{"indices": [2**32], "values": [1.0]}]), 1, False, "outside [0, 2**32)"),
            (_body([{"indices": [True], "values": [1.0]}]), 1, False, "not an integer"),
            (_body([{"indices": [1.0], "values": [1.0]}]), 1, False, "not an integer"),
            (_body([{"indices": ["1"], "values": [1.0]}]), 1, False, "not an integer"),
            (_body([{"indices": [1], "values": ["1"]}]), 1, False, "not a number"),
            (_body([{"indices": [1], "values": [False]}]), 1, False, "not a number"),
            (_body([{"indices": [1], "values": [None]}]), 1, False, "not a number"),
            (
                b'{"embeddings": [{"indices": [1], "values": [1e999]}], "num_tokens": 1}',
                1,
                False,
                "not valid JSON",
            ),
            (
                _body([{"indices": [4, 2, 4], "values": [1.0, 2.0, 3.0]}]),
                1,
                False,
                "repeats index 4",
            ),
        ],
    )
    def test_malformed_response_raises_invalid_response_error(
        self, content: bytes, expected: int, labels: bool, fragment: str
    ) -> None:
        """Every contract violation raises InvalidResponseError naming the problem."""
        with pytest.raises(InvalidResponseError) as info:
            parse_response(content, expected=expected, fetch_labels=labels, model="m")
        assert fragment in str(info.value)
        assert info.value.model == "m"

    def test_one_bad_item_fails_the_whole_response(self) -> None:
        """No partial result: a single bad item among good ones raises."""
        good = {"indices": [1], "values": [1.0]}
        with pytest.raises(InvalidResponseError, match=r"embeddings\[2\]"):
            _parse(_body([good, good, {"indices": [1], "values": [float("nan")]}]), expected=3)

    def test_values_whose_sum_overflows_are_refused_as_beyond_float32(self) -> None:
        """1e308 is a finite Python float but infinite once stored as float32: refused."""
        with pytest.raises(InvalidResponseError, match="not finite in float32"):
            _parse(_body([{"indices": [1, 2], "values": [1e308, 1e308]}]))


class TestErrorForStatus:
    @pytest.mark.parametrize(
        ("status", "cls"),
        [
            (400, InvalidRequestError),
            (401, AuthenticationError),
            (403, AuthenticationError),
            (404, InvalidRequestError),
            (413, InvalidRequestError),
            (422, InvalidRequestError),
            (429, RateLimitError),
            (501, UnsupportedModelError),
            (500, InternalServerError),
            (503, InternalServerError),
            (408, InternalServerError),
            (302, APIStatusError),
        ],
    )
    def test_each_status_maps_to_its_typed_error(
        self, status: int, cls: type[APIStatusError]
    ) -> None:
        """The error class follows the status, and carries status, text and model."""
        err = error_for_status(
            status, b'{"error": "boom"}', model="BAAI/bge-m3", api_key=None, api_key_env_var="K"
        )
        assert type(err) is cls
        assert (err.status_code, err.error, err.model) == (status, "boom", "BAAI/bge-m3")

    def test_unknown_model_400_lists_the_hosted_models(self) -> None:
        """A 400 for a model outside the catalog says so and lists the hosted ones."""
        err = error_for_status(
            400, b'{"error": "bad model"}', model="acme/x", api_key=None, api_key_env_var="K"
        )
        assert "not one of the hosted models" in str(err)
        assert "BAAI/bge-m3" in str(err)

    def test_api_key_echoed_by_the_service_is_scrubbed(self) -> None:
        """The key never reaches a message, even when the service echoes it."""
        secret = "ck-planted-secret-123"
        err = error_for_status(
            401,
            orjson.dumps({"error": f"bad token {secret}"}),
            model="m",
            api_key=secret,
            api_key_env_var="K",
        )
        assert secret not in str(err)
        assert secret not in repr(err)
        assert secret not in (err.error or "")

    def test_non_json_error_body_is_quoted_briefly(self) -> None:
        """An HTML error page is quoted, cut short, not parsed."""
        err = error_for_status(
            502, b"<html>" + b"x" * 5000, model="m", api_key=None, api_key_env_var="K"
        )
        assert isinstance(err, ServiceError)
        assert len(err.error or "") <= 300

    def test_401_names_the_env_var(self) -> None:
        """The 401 message says where the key was expected."""
        err = error_for_status(401, b"{}", model="m", api_key=None, api_key_env_var="MY_KEY")
        assert "MY_KEY" in str(err)

    def test_retry_after_rides_on_rate_limit_error(self) -> None:
        """A 429 carries the service's hint."""
        err = error_for_status(
            429, b"{}", model="m", api_key=None, api_key_env_var="K", retry_after=2.5
        )
        assert isinstance(err, RateLimitError)
        assert err.retry_after == 2.5


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38])
def test_a_value_finite_in_python_but_not_in_float32_is_refused(value: float) -> None:
    """The protocol applies the codec's and the index's rule: finite once stored as float32."""
    body = orjson.dumps(
        {"embeddings": [{"indices": [1, 2], "values": [0.5, value]}], "num_tokens": 2}
    )
    with pytest.raises(InvalidResponseError, match="not finite in float32"):
        parse_response(body, expected=1, fetch_labels=False, model="m")


def test_the_largest_float32_is_accepted() -> None:
    """A value at float32's maximum is finite when stored, so it passes."""
    top = float(np.finfo(np.float32).max)
    body = orjson.dumps({"embeddings": [{"indices": [1], "values": [top]}], "num_tokens": 1})
    (vector,), _ = parse_response(body, expected=1, fetch_labels=False, model="m")
    assert vector.values == [top]

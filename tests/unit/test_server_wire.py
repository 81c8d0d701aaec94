"""Server-side wire format: strict request parsing and response rendering, no I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from chroma_sparse_ef.server import SparseItem
from chroma_sparse_ef.server._problems import HTTPProblem
from chroma_sparse_ef.server._wire import RequestLimits, parse_embed_request, render_embed_response

_LIMITS = RequestLimits(max_texts=100, max_text_chars=50)


def _parse(body: Any) -> Any:
    return parse_embed_request(orjson.dumps(body), _LIMITS)


def _problem(body: Any | bytes) -> HTTPProblem:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(HTTPProblem) as info:
        parse_embed_request(raw, _LIMITS)
    return info.value


class TestAcceptedBodies:
    def test_empty_task_and_target_are_accepted(self) -> None:
        """task "" and target "", which chromadb's own client sends, are a valid body."""
        body = _parse({"texts": ["a"], "task": "", "target": ""})
        assert (body.texts, body.task, body.target) == (["a"], "", "")

    def test_instructions_alone_are_accepted(self) -> None:
        """`instructions` without task and target satisfies the spec's anyOf."""
        assert _parse({"texts": ["a"], "instructions": "Represent this"}).instructions

    def test_explicit_null_counts_as_present(self) -> None:
        """The spec requires the key: `instructions: null` is present, so valid."""
        assert _parse({"texts": ["a"], "instructions": None}).instructions is None

    def test_unknown_fields_are_ignored(self) -> None:
        """chromadb's client sends `fetch_tokens` as a string; it is ignored, not refused."""
        body = _parse({"texts": ["a"], "task": "", "target": "", "fetch_tokens": "true"})
        assert body.fetch_labels is None

    def test_empty_texts_list_is_valid(self) -> None:
        """The spec sets no minimum on `texts`."""
        assert _parse({"texts": [], "task": "", "target": ""}).texts == []

    def test_exactly_the_cap_of_texts_is_accepted(self) -> None:
        """100 texts is the cap, not over it."""
        assert len(_parse({"texts": ["x"] * 100, "task": "", "target": ""}).texts) == 100


class TestRefusedBodies:
    @pytest.mark.parametrize(
        "body",
        [
            {"texts": ["a"]},
            {"texts": ["a"], "task": ""},
            {"texts": ["a"], "target": ""},
            {"texts": ["a"], "fetch_labels": True},
        ],
    )
    def test_neither_instructions_nor_task_and_target_is_400(self, body: dict[str, Any]) -> None:
        """Without `instructions` or both `task` and `target` the body is refused."""
        problem = _problem(body)
        assert problem.status_code == 400
        assert "instructions" in problem.message

    @pytest.mark.parametrize(
        ("body", "where"),
        [
            ({"texts": "a", "task": "", "target": ""}, "texts"),
            ({"texts": [1], "task": "", "target": ""}, "texts.0"),
            ({"texts": ["a"], "task": 1, "target": ""}, "task"),
            ({"texts": ["a"], "task": "", "target": "", "fetch_labels": "true"}, "fetch_labels"),
            ({"texts": ["a"], "task": "", "target": "", "fetch_labels": 0}, "fetch_labels"),
            ({"task": "", "target": ""}, "texts"),
        ],
    )
    def test_wrong_types_are_400_never_coerced(self, body: dict[str, Any], where: str) -> None:
        """Types are checked strictly: "true" is not a boolean, 1 is not a string."""
        problem = _problem(body)
        assert problem.status_code == 400
        assert where in problem.message

    @pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"texts": ["a"],}'])
    def test_invalid_json_is_400(self, raw: bytes) -> None:
        """A body that is not JSON is a 400 that says so."""
        problem = _problem(raw)
        assert problem.status_code == 400
        assert problem.message.startswith("invalid JSON")

    @pytest.mark.parametrize("body", [[], None, "texts", 3])
    def test_a_body_that_is_not_an_object_is_400(self, body: Any) -> None:
        """Only a JSON object can be an EmbedRequestBody."""
        assert _problem(body).status_code == 400

    def test_error_message_does_not_quote_the_input(self) -> None:
        """Messages name the field, never echo the (possibly huge or secret) value."""
        problem = _problem({"texts": ["a"], "task": "s3cr3t-value", "target": 5})
        assert "s3cr3t-value" not in problem.message

    def test_more_than_100_texts_is_413(self) -> None:
        """The hosted service's cap: 101 texts is a 413."""
        problem = _problem({"texts": ["x"] * 101, "task": "", "target": ""})
        assert problem.status_code == 413
        assert "101" in problem.message

    def test_a_text_over_the_character_limit_is_413(self) -> None:
        """A text longer than max_text_chars is refused before any embedding work."""
        problem = _problem({"texts": ["ok", "y" * 51], "task": "", "target": ""})
        assert problem.status_code == 413
        assert "text 1" in problem.message


class TestRenderResponse:
    _ITEMS = (
        SparseItem(indices=[1, 5], values=[0.5, 1.25], labels=["a", "b"]),
        SparseItem(indices=[], values=[], labels=[]),
    )

    def test_labels_are_left_out_unless_asked_for(self) -> None:
        """Without fetch_labels the items carry no `labels` key."""
        body = orjson.loads(render_embed_response(self._ITEMS, 7, fetch_labels=False))
        assert body == {
            "embeddings": [
                {"indices": [1, 5], "values": [0.5, 1.25]},
                {"indices": [], "values": []},
            ],
            "num_tokens": 7,
        }

    def test_labels_are_included_when_asked_for(self) -> None:
        """With fetch_labels each item carries its labels, aligned with its indices."""
        body = orjson.loads(render_embed_response(self._ITEMS, 7, fetch_labels=True))
        assert [e["labels"] for e in body["embeddings"]] == [["a", "b"], []]

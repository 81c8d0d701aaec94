"""The server's limits as values and in-process: counting before parsing, budgets, /healthz."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from chroma_sparse_ef import ConfigurationError
from chroma_sparse_ef.cli import app as cli_app
from chroma_sparse_ef.server import ServerLimits, create_app
from chroma_sparse_ef.server._problems import HTTPProblem
from chroma_sparse_ef.server._settings import MAX_OTHER_JSON_STRINGS
from chroma_sparse_ef.server._wire import RequestLimits, count_json_values, parse_embed_request

HEADERS = {"x-chroma-token": "any", "x-chroma-embedding-model": "prithivida/Splade_PP_en_v1"}
_MOST = 100 + MAX_OTHER_JSON_STRINGS


def _values(node: Any) -> int:
    """Values in a parsed JSON document, object keys included."""
    if isinstance(node, dict):
        return 1 + sum(1 + _values(v) for v in node.values())
    if isinstance(node, list):
        return 1 + sum(_values(v) for v in node)
    return 1


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    pieces = ['"', "\\", ",", "[", "{", "a", " ", "\n", "é", "\\n", '\\"']
    kind = rng.randrange(5 if depth < 3 else 3)
    if kind == 0:
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(8)))
    if kind == 1:
        return rng.choice([0, -1.5, True, None])
    if kind == 2:
        return rng.choice(["", "x"])
    if kind == 3:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {f"k{i}": _random_json(rng, depth + 1) for i in range(rng.randrange(6))}


class TestCountJsonValues:
    def test_never_counts_more_values_than_a_parser_finds(self) -> None:
        """On 500 random documents full of quotes, escapes, commas and brackets inside
        strings, the count is a lower bound of the true number of values."""
        rng = random.Random(20261202)
        for _ in range(500):
            doc = _random_json(rng)
            for raw in (json.dumps(doc).encode(), orjson.dumps(doc)):
                assert count_json_values(raw, 10**9) <= _values(doc), raw

    def test_counts_every_element_of_a_flat_list(self) -> None:
        """Millions of tiny strings or numbers are counted in full: what the cap is for."""
        assert count_json_values(orjson.dumps(["ab"] * 5000), _MOST) >= 5000
        assert count_json_values(orjson.dumps([0] * 5000), _MOST) >= 5000
        assert count_json_values(orjson.dumps([[]] * 5000), _MOST) >= 5000

    def test_punctuation_inside_texts_is_not_structure(self) -> None:
        """100 texts full of commas, brackets and escaped quotes count as about 100 values."""
        text = 'a, [b] {c} "d" \\ e,' * 500
        raw = orjson.dumps({"texts": [text] * 100, "task": "", "target": ""})
        assert 100 <= count_json_values(raw, _MOST) <= 110


class TestCountedBeforeParsing:
    _LIMITS = RequestLimits(max_texts=100, max_text_chars=100_000)

    @pytest.mark.parametrize("element", [b'"ab"', b"0", b"[]", b"{}"])
    def test_a_body_of_thousands_of_values_is_413_without_being_parsed(
        self, element: bytes
    ) -> None:
        """The body is cut off mid-way (invalid JSON): a parser would answer 400, so the
        413 shows the values were counted, and the body refused, before any parsing."""
        raw = b'{"task": "", "target": "", "texts": [' + b",".join([element] * 5000)
        with pytest.raises(HTTPProblem) as info:
            parse_embed_request(raw, self._LIMITS)
        assert info.value.status_code == 413
        assert "at most 100 texts" in info.value.message

    def test_a_full_body_of_long_texts_is_still_parsed(self) -> None:
        """100 texts of 100,000 characters with commas (the largest valid body) pass."""
        text = ("word, " * 20_000)[:100_000]
        raw = orjson.dumps({"texts": [text] * 100, "task": "", "target": ""})
        assert len(parse_embed_request(raw, self._LIMITS).texts) == 100


class TestServerLimits:
    def test_defaults_fit_the_largest_valid_body(self) -> None:
        """100 texts of the longest length, as JSON, fit one body and the shared budget."""
        limits = ServerLimits()
        largest = 100 * (limits.max_text_chars + 4) + 64
        assert largest <= limits.max_body_bytes <= limits.max_buffered_bytes

    @pytest.mark.parametrize(
        "change",
        [
            {"max_connections": 0},
            {"header_timeout_s": float("nan")},
            {"body_timeout_s": -1.0},
            {"keep_alive_s": float("inf")},
            {"max_parallel_parses": 1.5},
            {"max_header_bytes": True},
            {"max_buffered_bytes": 10, "max_body_bytes": 11},
        ],
    )
    def test_invalid_limits_are_a_configuration_error(self, change: dict[str, Any]) -> None:
        """Zero, negative, non-finite, non-integer counts and a budget below one body fail."""
        with pytest.raises(ConfigurationError):
            ServerLimits(**change)

    def test_raising_the_body_cap_alone_raises_the_budget_with_it(self) -> None:
        """create_app(max_body_bytes=...) above the budget still lets one such body in."""
        big = 2 * ServerLimits().max_buffered_bytes
        limits = create_app(max_body_bytes=big).state.limits
        assert (limits.max_body_bytes, limits.max_buffered_bytes) == (big, big)


async def test_healthz_reports_every_limit() -> None:
    """/healthz lists the limits in force, the custom ones included."""
    limits = ServerLimits(max_connections=7, header_timeout_s=2.5)
    transport = httpx.ASGITransport(app=create_app(limits=limits))
    async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
        reported = (await client.get("/healthz")).json()["limits"]
    assert reported == limits.as_dict()
    assert reported["max_connections"] == 7


async def test_a_body_above_the_shared_budget_is_503_with_retry_after() -> None:
    """A body that would take the bytes held past max_buffered_bytes: 503, Retry-After;
    the budget is given back when the first body is done with."""
    limits = ServerLimits(max_body_bytes=1000, max_buffered_bytes=1000)
    transport = httpx.ASGITransport(app=create_app(limits=limits))
    body = orjson.dumps({"texts": ["x" * 900], "task": "", "target": ""})

    async def slow_body() -> Any:
        yield body[:600]
        # Second request arrives while this one holds 600 bytes.
        second = await client.post("/embed_sparse", headers=HEADERS, content=body)
        results.append(second)
        yield body[600:]

    results: list[httpx.Response] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
        first = await client.post("/embed_sparse", headers=HEADERS, content=slow_body())
        # Once the first body is done with, its bytes are given back.
        later = await client.post("/embed_sparse", headers=HEADERS, content=body)
    assert (first.status_code, later.status_code) == (200, 200)
    assert results[0].status_code == 503
    assert results[0].headers["retry-after"] == "1"
    assert "retry" in results[0].json()["error"]


def test_serve_help_lists_the_limits() -> None:
    """`serve --help` shows each client-facing limit with its default."""
    result = CliRunner().invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "80"})
    limits = ServerLimits()
    for option, default in [
        ("--max-body-bytes", limits.max_body_bytes),
        ("--max-connections", limits.max_connections),
        ("--header-timeout", limits.header_timeout_s),
        ("--body-timeout", limits.body_timeout_s),
        ("--keep-alive", limits.keep_alive_s),
    ]:
        assert option in result.output
        assert f"default: {default}" in result.output

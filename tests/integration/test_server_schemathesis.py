"""Property-based contract test: schemathesis drives the real server with the spec.

Positive and negative cases are generated from `embed_sparse.openapi.yaml` and sent over
real HTTP to a server on 127.0.0.1; every answer must conform to the spec (status code,
content type, body schema, headers), and data the spec calls invalid must be refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CHECKS
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from chroma_sparse_ef.server import SPEC_PATH
from chroma_sparse_ef.testing import LocalServer, run_local_server

#: The shared spec, found relative to the repository; the packaged copy otherwise.
_SHARED_SPEC = Path(__file__).parents[2].parent / "shared" / "spec" / "embed_sparse.openapi.yaml"
_SPEC = _SHARED_SPEC if _SHARED_SPEC.exists() else SPEC_PATH

#: Examples per generation mode: enough to hit every branch of the body schema and both
#: headers, and runs in ~20 s on 2 cores.
_MAX_EXAMPLES = 60

#: The checks asked of this server. `positive_data_acceptance` is left out on purpose:
#: a valid request for the dense-only model is answered 501, as the hosted service does.
_CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
)


@pytest.fixture(scope="module")
def contract_server() -> Iterator[LocalServer]:
    """A server of its own, so no other test's options can change its answers."""
    with run_local_server() as server:
        yield server


# Loaded at import (cheap, no I/O beyond the file). Cases come from `as_strategy` with
# `hypothesis.given`: schemathesis's lazy `from_fixture` loader does not run on pytest 9.
# 501 is the spec's documented answer for the dense-only model, so it is not a server
# error here; any other 5xx still fails the run.
_CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501"]}}}
)
_SCHEMA = schemathesis.openapi.from_path(_SPEC, config=_CONFIG)
_OPERATION = _SCHEMA["/embed_sparse"]["POST"]
_CHECKS = [check for check in CHECKS.get_all() if check.__name__ in _CHECK_NAMES]

_SETTINGS = settings(
    max_examples=_MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_every_listed_check_exists() -> None:
    """The checks named above are all known to schemathesis (a rename would skip one)."""
    assert sorted(check.__name__ for check in _CHECKS) == sorted(_CHECK_NAMES)


@_SETTINGS
@given(case=_OPERATION.as_strategy(GenerationMode.POSITIVE))
def test_server_answers_valid_requests_as_the_spec_says(
    contract_server: LocalServer, case: schemathesis.Case
) -> None:
    """Every request the spec allows gets a documented, schema-conformant answer."""
    case.call_and_validate(base_url=contract_server.url, checks=_CHECKS)


@_SETTINGS
@given(case=_OPERATION.as_strategy(GenerationMode.NEGATIVE))
def test_server_refuses_requests_the_spec_forbids(
    contract_server: LocalServer, case: schemathesis.Case
) -> None:
    """Every request the spec forbids is refused with a documented 4xx error body."""
    case.call_and_validate(base_url=contract_server.url, checks=_CHECKS)

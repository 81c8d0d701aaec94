"""The app documents the shared contract: its /openapi.json operation equals the spec's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chroma_sparse_ef._models import MODELS
from chroma_sparse_ef.server import SPEC_PATH, create_app

#: The shared spec, beside the repository; tests fall back to the packaged copy without it.
SHARED_SPEC = Path(__file__).parents[2].parent / "shared" / "spec" / "embed_sparse.openapi.yaml"
SPEC = SHARED_SPEC if SHARED_SPEC.exists() else SPEC_PATH


def _resolve(node: Any, document: dict[str, Any]) -> Any:
    """Inline every local $ref, so documents compare by meaning, not by layout."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _resolve(target, document)
        return {key: _resolve(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(value, document) for value in node]
    return node


def _normalise(node: Any) -> Any:
    """Order-insensitive where JSON Schema is: `enum` and `required` lists are sets."""
    if isinstance(node, dict):
        return {
            key: sorted(value)
            if key in ("enum", "required") and isinstance(value, list)
            else _normalise(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_normalise(value) for value in node]
    return node


def _operation(document: dict[str, Any]) -> dict[str, Any]:
    resolved = _resolve(document["paths"]["/embed_sparse"]["post"], document)
    return dict(_normalise(resolved))


@pytest.fixture(scope="module")
def spec_op() -> dict[str, Any]:
    """POST /embed_sparse as the spec describes it, refs inlined."""
    return _operation(yaml.safe_load(SPEC.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def app_op() -> dict[str, Any]:
    """POST /embed_sparse as the app's own /openapi.json describes it, refs inlined."""
    return _operation(create_app().openapi())


def test_request_body_schema_matches_the_spec(
    spec_op: dict[str, Any], app_op: dict[str, Any]
) -> None:
    """Same EmbedRequestBody: fields, types, required keys, the anyOf rule."""
    assert app_op["requestBody"] == spec_op["requestBody"]


def test_documented_status_codes_match_the_spec(
    spec_op: dict[str, Any], app_op: dict[str, Any]
) -> None:
    """200, 400, 401, 413, 429 and 501, and nothing else (no FastAPI 422)."""
    assert sorted(app_op["responses"]) == sorted(spec_op["responses"])
    assert sorted(spec_op["responses"]) == ["200", "400", "401", "413", "429", "501"]


@pytest.mark.parametrize("status", ["200", "400", "401", "413", "429", "501"])
def test_each_response_schema_and_description_match_the_spec(
    spec_op: dict[str, Any], app_op: dict[str, Any], status: str
) -> None:
    """Each status has the spec's description and body schema."""
    assert app_op["responses"][status] == spec_op["responses"][status]


def test_header_parameters_match_the_spec(spec_op: dict[str, Any], app_op: dict[str, Any]) -> None:
    """Both headers, required, with the same schemas (incl. the model enum)."""
    by_name = {p["name"]: p for p in app_op["parameters"]}
    assert by_name == {p["name"]: p for p in spec_op["parameters"]}


def test_operation_identity_matches_the_spec(
    spec_op: dict[str, Any], app_op: dict[str, Any]
) -> None:
    """Summary, description and operationId are the spec's, so generated clients agree."""
    for key in ("summary", "description", "operationId"):
        assert app_op[key] == spec_op[key]


def test_catalog_models_are_the_specs_enum(spec_op: dict[str, Any]) -> None:
    """The package's model catalog, which routing uses, lists exactly the spec's models."""
    (model_header,) = [p for p in spec_op["parameters"] if p["name"] == "x-chroma-embedding-model"]
    assert sorted(MODELS) == model_header["schema"]["enum"]


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="shared spec not beside the repository")
def test_packaged_spec_is_a_byte_identical_copy_of_the_shared_one() -> None:
    """chroma_sparse_ef/server/embed_sparse.openapi.yaml has not drifted from shared/spec."""
    assert SPEC_PATH.read_bytes() == SHARED_SPEC.read_bytes()

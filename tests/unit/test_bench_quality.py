"""bench/bench_quality.py's labelled queries stay answerable, and its metrics are right."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from chroma_sparse_ef import stdlib_docstrings

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_quality.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus_ids() -> set[str]:
    return {doc.id for doc in stdlib_docstrings()}


def test_every_heldout_query_has_an_answer_in_the_corpus(
    bench: ModuleType, corpus_ids: set[str]
) -> None:
    """Each of the 40 held-out queries has at least one answer this Python documents."""
    assert len(bench.HELDOUT) == 40
    unanswerable = [q for _, q, answers in bench.HELDOUT if not answers & corpus_ids]
    assert unanswerable == []
    assert {kind for kind, _, _ in bench.HELDOUT} == {"identifier", "paraphrase"}


def test_the_heldout_set_shares_no_query_with_the_notebook(bench: ModuleType) -> None:
    """Held out means held out: none of its queries is one notebook 02 shows and tunes on."""
    notebook = bench.notebook_queries()
    assert len(notebook) == 30
    assert {q for _, q, _ in bench.HELDOUT}.isdisjoint({q for _, q, _ in notebook})


def test_metrics_are_mrr_at_10_and_recall_at_10(bench: ModuleType) -> None:
    """First answers at positions 1 and 4 and one miss: MRR (1 + 1/4) / 3, recall 2/3."""
    result = bench.metrics([0, 3, None])
    assert result["MRR@10"] == pytest.approx((1 + 0.25) / 3)
    assert result["recall@10"] == pytest.approx(2 / 3)

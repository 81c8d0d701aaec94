"""`SpladeBackend`: SPLADE vectors from a tiny BERT masked-LM built in the test, in numpy.

The checkpoint comes from `splade_fixture` (seeded, no downloads). `GOLDEN` holds the
vectors an independent implementation computed for the same checkpoint, produced once,
outside this repository, in a scratch venv with torch 2.13.0+cpu, transformers 5.23.0,
tokenizers 0.23.3 and numpy 2.4.6:

1. ``splade_fixture.write_model_dir(dir)`` wrote the checkpoint (F32);
2. ``BertForMaskedLM.from_pretrained(dir, attn_implementation="eager")`` loaded it
   (``output_loading_info`` reported no missing or unexpected keys; the decoder tied to
   the word embeddings) and ``BertTokenizer(dir / "vocab.txt", do_lower_case=True)``
   tokenized `TEXTS` as one padded batch, ``truncation=True, max_length=64``;
3. under ``torch.no_grad()``, ``w = max(log1p(relu(logits)) * attention_mask, dim=1)``
   (the SPLADE repository's max pooling); each text's token ids, the ids with
   ``w > 0`` and those weights rounded to 5 decimals were pasted below.

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from chroma_sparse_ef import ConfigurationError
from chroma_sparse_ef.cli import app as cli_app
from chroma_sparse_ef.server import Bm25Backend, EmbedOutput, SparseBackend, create_app
from chroma_sparse_ef.server._bert import erf, gelu
from chroma_sparse_ef.server._safetensors import SafetensorsFile, bf16_to_f32
from chroma_sparse_ef.server._splade import SpladeBackend, SpladeEncoder

from . import splade_fixture
from .splade_fixture import VOCAB, write_model_dir, write_safetensors

MODEL = "prithivida/Splade_PP_en_v1"
OTHER_MODEL = "BAAI/bge-m3"
MAX_TOKENS = 64  # the fixture's max_position_embeddings

TEXTS = [
    "The cat sat on the mat.",
    "Sparse vector search with Chroma: hybrid embeddings!",
    "The quick brown fox jumps over the lazy dog",
    "",
    "cat dog " * 40,
]
# (token ids, indices, values) per text, from transformers: see the module docstring.
GOLDEN: list[tuple[list[int], list[int], list[float]]] = [
    (
        [2, 10, 20, 22, 17, 10, 23, 5, 3],
        [2, 3, 10, 14, 35, 36, 38, 39, 40, 49, 51, 56, 57],
        [1.2798, 1.40968, 1.42441, 0.07256, 1.25138, 0.26807, 0.76044, 0.08626, 0.8654, 1.32947, 0.36076, 0.89129, 0.94869],
    ),
    (
        [2, 30, 32, 33, 19, 35, 1, 34, 1, 7, 3],
        [0, 1, 2, 3, 6, 10, 14, 15, 17, 21, 29, 40, 56, 57, 58],
        [0.04611, 0.3734, 1.42518, 1.57819, 1.10691, 0.88322, 0.75327, 0.91689, 0.60502, 0.20805, 0.0711, 1.06267, 0.86927, 1.06419, 0.36212],
    ),
    (
        [2, 10, 1, 1, 57, 58, 49, 59, 10, 1, 21, 3],
        [1, 2, 3, 6, 13, 15, 17, 20, 21, 36, 40, 56, 57, 58],
        [0.83524, 0.93644, 1.37824, 0.25614, 0.00292, 0.41951, 0.30883, 0.16863, 0.31669, 0.69693, 1.0753, 0.35302, 1.09684, 0.46333],
    ),
    (
        [2, 3],
        [2, 3, 10, 16, 38, 49, 51, 57, 58],
        [1.09646, 1.5249, 1.06086, 0.03308, 0.14094, 1.09336, 0.16816, 0.86521, 1.38895],
    ),
    (
        [2, *[20, 21] * 31, 3],
        [1, 14, 17, 35, 38, 40, 49, 56, 57, 58],
        [0.78784, 0.06979, 0.12051, 1.04395, 0.23624, 0.96558, 0.27731, 0.85917, 0.81162, 0.74946],
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint, F32, in Hugging Face layout."""
    return write_model_dir(tmp_path_factory.mktemp("splade") / "f32")


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> SpladeBackend:
    """A SPLADE backend serving `MODEL` from the tiny checkpoint."""
    return SpladeBackend(model_dir, models=(MODEL,))


def _embed(
    backend: SparseBackend, texts: list[str], *, labels: bool = False, model: str = MODEL
) -> EmbedOutput:
    return backend.embed(
        texts, model=model, task="", target="", instructions=None, fetch_labels=labels
    )


def _dense(indices: list[int], values: list[float]) -> np.ndarray:
    out = np.zeros(len(VOCAB))
    out[indices] = values
    return out


def test_vectors_match_transformers_golden_values(backend: SpladeBackend) -> None:
    """Indices equal and values within 1e-4 of BertForMaskedLM + SPLADE max pooling."""
    output = _embed(backend, TEXTS)
    for item, (_, indices, values) in zip(output.items, GOLDEN, strict=True):
        assert item.indices == indices
        np.testing.assert_allclose(item.values, values, atol=1e-4, rtol=0)


def test_tokens_and_num_tokens_match_the_reference(backend: SpladeBackend) -> None:
    """Token ids equal the reference's; num_tokens counts them, [CLS]/[SEP] in, padding out."""
    encoder = backend._encoders[MODEL]
    ids = [e.ids for e in encoder.tokenizer.encode_batch(TEXTS)]
    assert ids == [golden[0] for golden in GOLDEN]
    assert _embed(backend, TEXTS).num_tokens == sum(len(i) for i in ids)


def test_indices_ascend_strictly_and_values_are_positive(backend: SpladeBackend) -> None:
    """Every vector is sorted, unique and has only positive weights."""
    for item in _embed(backend, TEXTS).items:
        assert item.indices
        assert all(a < b for a, b in zip(item.indices, item.indices[1:], strict=False))
        assert all(v > 0 for v in item.values)
        assert all(isinstance(i, int) for i in item.indices)
        assert all(isinstance(v, float) for v in item.values)


def test_labels_are_the_vocabulary_strings_only_when_asked(backend: SpladeBackend) -> None:
    """fetch_labels gives the wordpiece of each index; without it, no labels."""
    with_labels = _embed(backend, TEXTS, labels=True).items
    without = _embed(backend, TEXTS).items
    for item in with_labels:
        assert item.labels == [VOCAB[i] for i in item.indices]
    assert all(item.labels is None for item in without)


def test_vectors_are_deterministic(backend: SpladeBackend) -> None:
    """The same texts give identical vectors on every call."""
    assert _embed(backend, TEXTS).items == _embed(backend, TEXTS).items


def test_padding_does_not_leak_into_a_short_text(backend: SpladeBackend) -> None:
    """A text embedded alone equals the same text batched with a much longer one."""
    short = TEXTS[0]
    alone = _embed(backend, [short]).items[0]
    batched = _embed(backend, ["hybrid sparse search " * 15, short]).items[1]
    assert batched.indices == alone.indices
    # Only BLAS rounding may differ (logits are ~5, float32 keeps ~7 digits); a leak of
    # padding would move weights by tenths.
    np.testing.assert_allclose(batched.values, alone.values, atol=1e-5)


def test_sub_batches_keep_the_input_order(model_dir: Path, backend: SpladeBackend) -> None:
    """Batches of 2 (sorted by length) return the same vectors, in input order."""
    small = SpladeBackend(model_dir, models=(MODEL,), batch_size=2)
    expected = _embed(backend, TEXTS).items
    got = _embed(small, TEXTS).items
    for a, b in zip(got, expected, strict=True):
        assert a.indices == b.indices
        np.testing.assert_allclose(a.values, b.values, atol=1e-5)


def test_concurrent_calls_give_the_same_vectors(backend: SpladeBackend) -> None:
    """Eight threads embedding at once get what one thread gets (the weights are shared)."""
    expected = _embed(backend, TEXTS).items
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: _embed(backend, TEXTS).items, range(16)))
    assert all(result == expected for result in results)


def test_long_texts_are_truncated_to_the_model_length(backend: SpladeBackend) -> None:
    """A text past 64 tokens is cut: same vector as its first 62 words, 64 tokens counted."""
    words = ["cat", "dog", "ran", "fast"] * 30
    long = _embed(backend, [" ".join(words)])
    prefix = _embed(backend, [" ".join(words[: MAX_TOKENS - 2])])
    assert long.num_tokens == MAX_TOKENS
    assert long.items == prefix.items


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_half_precision_checkpoints_give_the_same_vectors(
    tmp_path: Path, backend: SpladeBackend, dtype: str
) -> None:
    """F16 and BF16 files load (widened to float32) and, with exact weights, agree with F32."""
    half = SpladeBackend(write_model_dir(tmp_path, dtype=dtype), models=(MODEL,))
    for a, b in zip(_embed(half, TEXTS).items, _embed(backend, TEXTS).items, strict=True):
        assert a.indices == b.indices
        np.testing.assert_allclose(a.values, b.values, rtol=1e-6)


def test_checkpoints_without_the_bert_prefix_load(tmp_path: Path, backend: SpladeBackend) -> None:
    """Encoder tensors named without ``bert.`` give the same vectors."""
    bare = SpladeBackend(write_model_dir(tmp_path, strip_prefix=True), models=(MODEL,))
    assert _embed(bare, TEXTS).items == _embed(backend, TEXTS).items


def test_a_vocab_txt_tokenizer_is_built_when_tokenizer_json_is_absent(
    tmp_path: Path, backend: SpladeBackend
) -> None:
    """With only vocab.txt, the BERT WordPiece tokenizer built from it gives the same vectors."""
    old_style = SpladeBackend(write_model_dir(tmp_path, tokenizer_json=False), models=(MODEL,))
    assert _embed(old_style, TEXTS, labels=True) == _embed(backend, TEXTS, labels=True)


def test_a_missing_tensor_is_named_in_a_configuration_error(tmp_path: Path) -> None:
    """Leaving out one weight fails at load time, naming the tensor."""
    name = "bert.encoder.layer.1.output.dense.weight"
    with pytest.raises(ConfigurationError, match=r"missing tensor 'bert\.encoder\.layer\.1\."):
        SpladeBackend(write_model_dir(tmp_path, drop=[name]), models=(MODEL,))


def test_a_wrongly_shaped_tensor_is_refused(tmp_path: Path) -> None:
    """A config that disagrees with the weights fails with the shapes in the message."""
    write_model_dir(tmp_path)
    config = (tmp_path / "config.json").read_text().replace('"hidden_size": 16', '"hidden_size": 8')
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(ConfigurationError, match="shape"):
        SpladeBackend(tmp_path, models=(MODEL,))


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("nothing", "not found"),
        ("bin-only", "pytorch_model.bin"),
        ("xlm-roberta", "model_type 'xlm-roberta'"),
        ("no-tokenizer", "no tokenizer.json"),
        ("bad-header", "not JSON"),
    ],
)
def test_unusable_directories_fail_with_a_clear_message(
    tmp_path: Path, setup: str, message: str
) -> None:
    """Missing files, torch-only weights, non-BERT configs and corrupt files are named."""
    directory = tmp_path / "model"
    if setup != "nothing":
        write_model_dir(directory)
    if setup == "bin-only":
        (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
    elif setup == "xlm-roberta":
        text = (directory / "config.json").read_text()
        (directory / "config.json").write_text(text.replace('"bert"', '"xlm-roberta"'))
    elif setup == "no-tokenizer":
        (directory / "tokenizer.json").unlink()
        (directory / "vocab.txt").unlink()
    elif setup == "bad-header":
        (directory / "model.safetensors").write_bytes((4).to_bytes(8, "little") + b"nope")
    with pytest.raises(ConfigurationError, match=message):
        SpladeBackend(directory, models=(MODEL,))


def test_safetensors_reader_decodes_every_float_dtype_exactly(tmp_path: Path) -> None:
    """F32, F16 and BF16 tensors read back as the float32 values written."""
    values = np.array([[1.5, -2.0], [3.140625, 0.0078125]], dtype=np.float32)
    for dtype in ("F32", "F16", "BF16"):
        path = tmp_path / f"{dtype}.safetensors"
        write_safetensors(path, {"t": values}, dtype)
        read = SafetensorsFile(path).read("t")
        assert read.dtype == np.float32
        np.testing.assert_array_equal(read, values)


def test_bf16_widening_puts_the_bits_in_the_high_half() -> None:
    """0x3FC0 is 1.5 and 0xC000 is -2.0 in bfloat16."""
    raw = np.array([0x3FC0, 0xC000, 0x0000], dtype=np.uint16)
    np.testing.assert_array_equal(bf16_to_f32(raw), [1.5, -2.0, 0.0])


def test_safetensors_reader_refuses_offsets_past_the_data(tmp_path: Path) -> None:
    """A header promising more bytes than the file holds is a ConfigurationError."""
    path = tmp_path / "short.safetensors"
    write_safetensors(path, {"t": np.ones(4, dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ConfigurationError, match="offsets"):
        SafetensorsFile(path)


def test_erf_is_within_float32_precision_of_math_erf() -> None:
    """The Abramowitz-Stegun erf, in float32, is within 6e-7 of math.erf; GELU within 1e-6."""
    x = np.linspace(-6, 6, 4001, dtype=np.float32)
    exact = np.array([math.erf(float(v)) for v in x])
    assert np.max(np.abs(erf(x) - exact)) < 6e-7
    exact_gelu = np.array([0.5 * float(v) * (1 + math.erf(float(v) / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(gelu(x), exact_gelu, atol=1e-6)


def test_from_dirs_serves_several_models_and_shares_a_directory(model_dir: Path) -> None:
    """Two names on one directory load it once; the description names the directory."""
    doc, query = (
        "naver/efficient-splade-VI-BT-large-doc",
        "naver/efficient-splade-VI-BT-large-query",
    )
    backend = SpladeBackend.from_dirs({doc: model_dir, query: str(model_dir)})
    assert backend.models == (doc, query)
    assert backend._encoders[doc] is backend._encoders[query]
    assert str(model_dir) in backend.description
    assert "SPLADE" in backend.description
    assert isinstance(backend, SparseBackend)
    assert _embed(backend, TEXTS[:1], model=query) == _embed(backend, TEXTS[:1], model=doc)


def test_empty_model_lists_are_refused(model_dir: Path) -> None:
    """A backend serving no model is a configuration mistake."""
    with pytest.raises(ConfigurationError):
        SpladeBackend(model_dir, models=())
    with pytest.raises(ConfigurationError):
        SpladeBackend.from_dirs({})


def test_encoder_caps_max_length_at_the_model_positions(model_dir: Path) -> None:
    """max_length 512 on a 64-position model truncates at 64."""
    assert SpladeEncoder(model_dir, max_length=512).max_length == MAX_TOKENS


async def test_app_routes_splade_models_to_splade_and_the_rest_to_bm25(
    backend: SpladeBackend,
) -> None:
    """Over HTTP: golden vectors and the splade header for its model, BM25 for others."""
    application = create_app(backends=[backend, Bm25Backend()])
    transport = httpx.ASGITransport(app=application)
    body: dict[str, Any] = {"texts": TEXTS[:2], "task": "", "target": "", "fetch_labels": True}
    async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
        splade = await client.post(
            "/embed_sparse",
            headers={"x-chroma-token": "t", "x-chroma-embedding-model": MODEL},
            json=body,
        )
        bm25 = await client.post(
            "/embed_sparse",
            headers={"x-chroma-token": "t", "x-chroma-embedding-model": OTHER_MODEL},
            json=body,
        )
        health = (await client.get("/healthz")).json()
    assert splade.status_code == 200, splade.text
    assert splade.headers["x-chroma-sparse-ef-backend"] == "splade"
    payload = splade.json()
    assert payload["num_tokens"] == len(GOLDEN[0][0]) + len(GOLDEN[1][0])
    for item, (_, indices, values) in zip(payload["embeddings"], GOLDEN, strict=False):
        assert item["indices"] == indices
        np.testing.assert_allclose(item["values"], values, atol=1e-4)
        assert item["labels"] == [VOCAB[i] for i in indices]
    assert bm25.headers["x-chroma-sparse-ef-backend"] == "bm25"
    assert health["models"][MODEL] == "splade"
    assert health["models"][OTHER_MODEL] == "bm25"
    described = {b["name"]: b for b in health["backends"]}
    assert described["splade"]["models"] == [MODEL]
    assert "SPLADE max-pooled MLM weights" in described["splade"]["description"]


class _FakeUvicorn:
    """Stands in for uvicorn: records /healthz of the app `serve` built, serves nothing."""

    health: dict[str, Any] | None = None

    def __init__(self, application: Any, **_: Any) -> None:
        self.application = application

    def run(self, sockets: Any) -> None:
        _FakeUvicorn.health = TestClient(self.application).get("/healthz").json()


def test_serve_splade_option_puts_the_model_on_a_splade_backend(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --splade MODEL=DIR` serves MODEL with SPLADE and everything else with BM25."""
    monkeypatch.setattr("chroma_sparse_ef.server._serve.make_uvicorn_server", _FakeUvicorn)
    _FakeUvicorn.health = None
    result = CliRunner().invoke(
        cli_app, ["serve", "--port", "0", "--splade", f"{MODEL}={model_dir}"]
    )
    assert result.exit_code == 0, result.output
    assert _FakeUvicorn.health is not None
    assert _FakeUvicorn.health["models"][MODEL] == "splade"
    assert _FakeUvicorn.health["models"][OTHER_MODEL] == "bm25"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("no-equals-sign", "--splade takes MODEL=DIR"),
        (f"{MODEL}=", "--splade takes MODEL=DIR"),
        (f"{MODEL}=/no/such/dir", "not found"),
        ("unknown/model={dir}", "unknown model"),
    ],
)
def test_serve_splade_option_errors_are_one_line(model_dir: Path, spec: str, expected: str) -> None:
    """Bad --splade values print one `chroma-sparse-ef: error:` line and exit 1."""
    args = ["serve", "--port", "0", "--splade", spec.replace("{dir}", str(model_dir))]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("chroma-sparse-ef: error: ")
    assert expected in lines[0]


def test_fixture_weights_are_exact_in_half_precision() -> None:
    """The fixture's premise: every weight survives a float16 round trip unchanged."""
    for array in splade_fixture.build_weights().values():
        np.testing.assert_array_equal(array.astype(np.float16).astype(np.float32), array)

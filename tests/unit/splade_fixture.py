"""A tiny, randomly initialised BERT masked-LM checkpoint, built on disk in Hugging Face layout.

Used by ``test_server_splade.py`` and by the script that produced its golden values
with transformers (so it imports only numpy and tokenizers). Weights depend only on
`SEED` and each tensor's name (one PCG64 stream per tensor, uniform draws), and are
rounded to multiples of 1/128 (1/32 for the MLM bias) at most 256 steps from zero:
such numbers are exact in F32, F16 and BF16, so the three checkpoint dtypes hold identical weights.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing

SEED = 20240617

VOCAB: tuple[str, ...] = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    ".", ",", "!", "?", "-",
    "the", "a", "of", "and", "to", "in", "is", "on", "for", "with",
    "cat", "dog", "sat", "mat", "ran", "fast", "slow", "red", "blue", "big",
    "sparse", "dense", "vector", "search", "hybrid", "chroma", "embed", "model", "query",
    "document", "token", "word", "text", "server", "local", "weight", "bert", "spl",
    "##ade", "##s", "##ing", "##ed", "##er", "##ly", "##x", "x", "run", "fox", "jump", "over",
)  # fmt: skip

CONFIG: dict[str, Any] = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "vocab_size": len(VOCAB),
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "hidden_act": "gelu",
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": 0.02,
}

_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def _uniform(
    name: str, shape: tuple[int, ...], low: float, high: float, step: float = 1 / 128
) -> NDArray[np.float32]:
    # Multiples of `step` up to 256 steps in magnitude fit bfloat16's 8 significant bits.
    assert max(abs(low), abs(high)) <= 256 * step
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    values = rng.uniform(low, high, size=shape)
    return (np.round(values / step) * step).astype(np.float32)


def build_weights(config: dict[str, Any] = CONFIG) -> dict[str, NDArray[np.float32]]:
    """The checkpoint's tensors, named as `BertForMaskedLM.save_pretrained` names them.

    The MLM decoder is tied to the word embeddings, so it is left out (as transformers
    leaves it out); the decoder bias is ``cls.predictions.bias``.
    """
    v, h = int(config["vocab_size"]), int(config["hidden_size"])
    inter = int(config["intermediate_size"])
    layers = int(config["num_hidden_layers"])
    positions = int(config["max_position_embeddings"])
    types = int(config["type_vocab_size"])
    shapes: dict[str, tuple[int, ...]] = {
        "bert.embeddings.word_embeddings.weight": (v, h),
        "bert.embeddings.position_embeddings.weight": (positions, h),
        "bert.embeddings.token_type_embeddings.weight": (types, h),
    }
    layer_norms = ["bert.embeddings.LayerNorm", "cls.predictions.transform.LayerNorm"]
    linears = {"cls.predictions.transform.dense": (h, h)}
    for i in range(layers):
        p = f"bert.encoder.layer.{i}."
        for part in ("query", "key", "value"):
            linears[p + f"attention.self.{part}"] = (h, h)
        linears[p + "attention.output.dense"] = (h, h)
        linears[p + "intermediate.dense"] = (inter, h)
        linears[p + "output.dense"] = (h, inter)
        layer_norms += [p + "attention.output.LayerNorm", p + "output.LayerNorm"]
    tensors = {name: _uniform(name, shape, -1.0, 1.0) for name, shape in shapes.items()}
    for name, shape in linears.items():
        tensors[name + ".weight"] = _uniform(name + ".weight", shape, -0.5, 0.5)
        tensors[name + ".bias"] = _uniform(name + ".bias", shape[:1], -0.1, 0.1)
    for name in layer_norms:
        tensors[name + ".weight"] = _uniform(name + ".weight", (h,), 0.75, 1.25)
        tensors[name + ".bias"] = _uniform(name + ".bias", (h,), -0.1, 0.1)
    # A negative bias keeps most logits below zero, so the vectors are actually sparse.
    tensors["cls.predictions.bias"] = _uniform("cls.predictions.bias", (v,), -6, -1, 1 / 32)
    return tensors


def write_safetensors(
    path: Path, tensors: dict[str, NDArray[np.float32]], dtype: str = "F32"
) -> None:
    """Write `tensors` as a safetensors file, every tensor stored as `dtype`."""
    blobs: list[bytes] = []
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, array in tensors.items():
        if dtype == "BF16":
            bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
            # Round to nearest even, as torch does (exact for this fixture's weights).
            rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> 16
            data = rounded.astype("<u2").tobytes()
        else:
            data = np.ascontiguousarray(array).astype(_DTYPES[dtype]).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the reference writer pads the header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def build_tokenizer(vocab: Iterable[str] = VOCAB) -> Tokenizer:
    """A BERT WordPiece tokenizer: lowercasing, [CLS] text [SEP]."""
    ids = {token: i for i, token in enumerate(vocab)}
    tokenizer = Tokenizer(WordPiece(ids, unk_token="[UNK]"))
    tokenizer.normalizer = BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = BertPreTokenizer()
    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    return tokenizer


def write_model_dir(
    path: Path,
    *,
    dtype: str = "F32",
    drop: Iterable[str] = (),
    strip_prefix: bool = False,
    tokenizer_json: bool = True,
) -> Path:
    """Write config.json, model.safetensors, tokenizer.json and vocab.txt into `path`.

    Args:
        path: The directory (created if needed).
        dtype: Storage dtype of every tensor: F32, F16 or BF16.
        drop: Tensor names to leave out.
        strip_prefix: Store encoder tensors without the ``bert.`` prefix.
        tokenizer_json: Write tokenizer.json (else only vocab.txt).

    Returns:
        `path`.
    """
    path.mkdir(parents=True, exist_ok=True)
    dropped = set(drop)
    tensors = {
        (name.removeprefix("bert.") if strip_prefix else name): array
        for name, array in build_weights().items()
        if name not in dropped
    }
    write_safetensors(path / "model.safetensors", tensors, dtype)
    (path / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (path / "vocab.txt").write_text("".join(token + "\n" for token in VOCAB))
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    if tokenizer_json:
        build_tokenizer().save(str(path / "tokenizer.json"))
    return path

"""The local server's SPLADE backend (numpy) against transformers + torch, same weights.

A BERT-base-sized checkpoint (hidden 768, 12 layers, vocab 30,522) with seeded random
weights is written once to a temporary folder. Random weights make the timing real, since
the arithmetic is the same, but the vectors meaningless. `SpladeBackend` then embeds texts
of 64 tokens at batch sizes 1, 16 and 64.

When torch and transformers are importable (they are not dependencies of this project:
`pip install torch==2.13.0 transformers` in a scratch venv), the same checkpoint runs
through `BertForMaskedLM` with SPLADE pooling in the same run. The script prints both
timings, their ratio, and the largest difference between the two sets of vectors.

Run: python bench/bench_splade.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

import splade_fixture as fixture

from chroma_sparse_ef.server import SpladeBackend

BASE = {
    **fixture.CONFIG,
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
}
MODEL = "bench/splade-base-random"


def write_checkpoint(path: Path) -> list[str]:
    """Write the BERT-base-sized checkpoint; return its vocabulary."""
    vocab = list(fixture.VOCAB) + [
        f"[unused{i}]" for i in range(BASE["vocab_size"] - len(fixture.VOCAB))
    ]
    weights = fixture.build_weights(BASE)
    for name, array in weights.items():
        # The fixture's weights suit its 16-wide model. At 768 they would saturate every
        # softmax, so rounding alone would decide attention; BERT itself initialises with
        # std 0.02 (initializer_range), so matrices and embeddings are scaled to that.
        if array.ndim == 2:
            weights[name] = (array * np.float32(0.02 / array.std())).astype(np.float32)
    fixture.write_safetensors(path / "model.safetensors", weights, "F32")
    (path / "config.json").write_text(json.dumps(BASE))
    (path / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    fixture.build_tokenizer(vocab).save(str(path / "tokenizer.json"))
    return vocab


def texts_of_64_tokens(n: int) -> list[str]:
    words = [w for w in fixture.VOCAB if not w.startswith(("[", "##"))]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, 62)) for _ in range(n)]  # + [CLS] and [SEP]


def time_numpy(backend: SpladeBackend, texts: list[str], batch: int) -> float:
    reps = max(1, 32 // batch)
    start = time.perf_counter()
    for _ in range(reps):
        backend.embed(
            texts[:batch],
            model=MODEL,
            task=None,
            target=None,
            instructions=None,
            fetch_labels=False,
        )
    return (time.perf_counter() - start) / reps / batch


def torch_side(path: Path, texts: list[str], numpy_vectors: list[dict[int, float]]) -> None:
    try:
        import torch
        from tokenizers import Tokenizer
        from transformers import BertForMaskedLM
    except ImportError:
        print("transformers + torch: not installed here, so no side-by-side in this run")
        return
    model = BertForMaskedLM.from_pretrained(str(path), attn_implementation="eager").eval()
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    encoded = tokenizer.encode_batch(texts[:16])
    ids = torch.tensor([e.ids for e in encoded])
    mask = torch.tensor([e.attention_mask for e in encoded])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        start = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=mask).logits
        weights = torch.max(torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1), dim=1).values
        per_text = (time.perf_counter() - start) / 16
    diff = 0.0
    for row, ours in zip(weights.numpy(), numpy_vectors, strict=True):
        theirs = {int(i): float(row[i]) for i in np.nonzero(row > 0)[0]}
        keys = set(theirs) | set(ours)
        diff = max(diff, max(abs(theirs.get(k, 0.0) - ours.get(k, 0.0)) for k in keys))
    print(
        f"transformers {__import__('transformers').__version__} + torch {torch.__version__}, "
        f"batch 16: {per_text * 1000:7.1f} ms/text"
    )
    print(f"largest difference between the two sets of vectors: {diff:.2e}")
    print(f"ratio torch / numpy at batch 16: {per_text / RESULTS[16]:.2f}")


RESULTS: dict[int, float] = {}


def main() -> None:
    texts = texts_of_64_tokens(64)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        start = time.perf_counter()
        write_checkpoint(path)
        print(f"wrote a BERT-base-sized random checkpoint in {time.perf_counter() - start:.1f} s")
        backend = SpladeBackend(path, models=(MODEL,))
        out = backend.embed(
            texts[:16], model=MODEL, task=None, target=None, instructions=None, fetch_labels=False
        )
        numpy_vectors = [dict(zip(i.indices, i.values, strict=True)) for i in out.items]
        print(f"{out.num_tokens // 16} tokens per text")
        for batch in (1, 16, 64):
            RESULTS[batch] = time_numpy(backend, texts, batch)
            print(f"numpy SpladeBackend, batch {batch:2d}: {RESULTS[batch] * 1000:7.1f} ms/text")
        torch_side(path, texts, numpy_vectors)


if __name__ == "__main__":
    main()

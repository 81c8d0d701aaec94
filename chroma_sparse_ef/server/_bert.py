"""A BERT masked-language model in float32 numpy: config, weights and forward pass.

Just enough of Hugging Face's `BertForMaskedLM` to compute MLM logits for SPLADE:
absolute position embeddings, post-layer-norm encoder layers, the MLM transform head
and a decoder tied to the word embeddings (or not, as the config says). Weights come
from a ``model.safetensors`` with `BertForMaskedLM`'s tensor names, with or without the
``bert.`` prefix. No torch: matrix products go to numpy's BLAS.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._exceptions import ConfigurationError
from ._safetensors import SafetensorsFile

__all__ = ["BertConfig", "BertMaskedLM", "erf", "gelu"]

F32 = NDArray[np.float32]

# Abramowitz & Stegun 7.1.26: erf(x) = 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1/(1 + p x)
# for x >= 0, absolute error below 1.5e-7 in exact arithmetic. Evaluated in float32 the
# error reaches 5.4e-7 (measured against math.erf on [-6, 6]), near x = 0, where GELU
# scales it by x / 2: GELU's error stays far below float32 resolution of its output.
# numpy has no erf and scipy is not a dependency; float64 would double time and memory.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)

#: Added to attention scores of padding keys. Hugging Face uses the dtype's minimum;
#: anything that makes exp() underflow to exactly 0 after the max-shift will do, and a
#: finite value cannot turn into NaN when a row is all padding.
_MASK_VALUE = np.float32(-1e30)


def erf(x: F32) -> F32:
    """The error function, elementwise, to within 6e-7 (Abramowitz & Stegun 7.1.26).

    Args:
        x: Any float32 array.

    Returns:
        erf(x), same shape, float32.
    """
    a = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(_AS_P) * a)
    a1, a2, a3, a4, a5 = (np.float32(c) for c in _AS_A)
    poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))
    y: F32 = np.float32(1.0) - poly * np.exp(-a * a)
    out: F32 = np.copysign(y, x)
    return out


def gelu(x: F32) -> F32:
    """Exact GELU, ``x * Phi(x)``, as torch's default (``approximate="none"``) computes it.

    Args:
        x: Any float32 array.

    Returns:
        GELU(x), same shape, float32.
    """
    return x * np.float32(0.5) * (np.float32(1.0) + erf(x * np.float32(1.0 / math.sqrt(2.0))))


def _gelu_tanh(x: F32) -> F32:
    # The tanh approximation; Hugging Face's "gelu_new" and "gelu_pytorch_tanh".
    c = np.float32(math.sqrt(2.0 / math.pi))
    inner = c * (x + np.float32(0.044715) * x * x * x)
    return (np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))).astype(np.float32)


def _relu(x: F32) -> F32:
    return np.maximum(x, np.float32(0.0))


_ACTIVATIONS: dict[str, Callable[[F32], F32]] = {
    "gelu": gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": _relu,
}


@dataclass(frozen=True, slots=True)
class BertConfig:
    """The fields of a Hugging Face ``config.json`` the forward pass needs.

    Attributes:
        vocab_size: Rows of the word embedding matrix.
        hidden_size: Width of the hidden states.
        num_hidden_layers: Encoder layers.
        num_attention_heads: Heads per layer; must divide `hidden_size`.
        intermediate_size: Width of the feed-forward layer.
        hidden_act: Activation of the feed-forward layer and the MLM transform.
        max_position_embeddings: Longest input, in tokens.
        type_vocab_size: Token-type (segment) embeddings.
        layer_norm_eps: Epsilon of every layer norm.
        tie_word_embeddings: Whether the MLM decoder reuses the word embeddings.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    tie_word_embeddings: bool = True

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        """Read a ``config.json`` (defaults as in transformers' `BertConfig`).

        Args:
            path: The file.

        Returns:
            The config.

        Raises:
            ConfigurationError: If the file is unreadable, not a BERT config, or uses a
                feature this implementation lacks.
        """
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{path}: expected a JSON object")
        model_type = raw.get("model_type", "bert")
        if model_type != "bert":
            raise ConfigurationError(
                f"{path}: model_type {model_type!r} is not supported; the SPLADE backend "
                "runs BERT masked-LM checkpoints only (model_type 'bert')"
            )
        position = raw.get("position_embedding_type", "absolute")
        if position != "absolute":
            raise ConfigurationError(f"{path}: position_embedding_type {position!r} unsupported")
        try:
            config = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                intermediate_size=int(raw["intermediate_size"]),
                hidden_act=str(raw.get("hidden_act", "gelu")),
                max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{path}: missing or invalid field {exc}") from exc
        if config.hidden_act not in _ACTIVATIONS:
            raise ConfigurationError(
                f"{path}: hidden_act {config.hidden_act!r} unsupported; "
                f"supported: {', '.join(_ACTIVATIONS)}"
            )
        if config.hidden_size % config.num_attention_heads:
            raise ConfigurationError(f"{path}: hidden_size is not a multiple of the head count")
        return config


@dataclass(frozen=True, slots=True)
class _Layer:
    # Linear weights are stored transposed, (in, out), so x @ w needs no transpose.
    qkv_w: F32  # (hidden, 3 * hidden): query, key and value fused into one product
    qkv_b: F32
    attn_out_w: F32
    attn_out_b: F32
    attn_ln: tuple[F32, F32]
    inter_w: F32
    inter_b: F32
    out_w: F32
    out_b: F32
    out_ln: tuple[F32, F32]


class _Weights:
    """Looks tensors up by their `BertForMaskedLM` names, whatever the prefix."""

    def __init__(self, file: SafetensorsFile) -> None:
        self._file = file
        # With a `bert.` prefix (BertForMaskedLM.save_pretrained) or without (some exports).
        self._prefix = "bert." if "bert.embeddings.word_embeddings.weight" in file else ""

    def get(self, name: str, *, encoder: bool = True) -> F32:
        full = self._prefix + name if encoder else name
        candidates = [full]
        # TF-era checkpoints call layer-norm parameters gamma and beta.
        if full.endswith("LayerNorm.weight"):
            candidates.append(full.removesuffix("weight") + "gamma")
        elif full.endswith("LayerNorm.bias"):
            candidates.append(full.removesuffix("bias") + "beta")
        for candidate in candidates:
            if candidate in self._file:
                return self._file.read(candidate)
        raise ConfigurationError(f"{self._file.path}: missing tensor {full!r}")

    def has(self, name: str) -> bool:
        return name in self._file

    def linear(self, name: str) -> tuple[F32, F32]:
        return np.ascontiguousarray(self.get(name + ".weight").T), self.get(name + ".bias")

    def layer_norm(self, name: str, *, encoder: bool = True) -> tuple[F32, F32]:
        return self.get(name + ".weight", encoder=encoder), self.get(
            name + ".bias", encoder=encoder
        )


def _layer_norm(x: F32, params: tuple[F32, F32], eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    out: F32 = centred / np.sqrt(var + np.float32(eps)) * params[0] + params[1]
    return out


class BertMaskedLM:
    """`BertForMaskedLM` inference in float32 numpy.

    Immutable after loading, so `hidden_states` and `mlm_logits` are safe to call from
    several threads at once.

    Args:
        config: The model's configuration.
        weights: The ``model.safetensors`` file.

    Raises:
        ConfigurationError: If a tensor is missing or has the wrong shape.
    """

    def __init__(self, config: BertConfig, weights: SafetensorsFile) -> None:
        self.config = config
        w = _Weights(weights)
        h = config.hidden_size
        self.word_embeddings = w.get("embeddings.word_embeddings.weight")
        self.position_embeddings = w.get("embeddings.position_embeddings.weight")
        self.token_type_embeddings = w.get("embeddings.token_type_embeddings.weight")
        self.embeddings_ln = w.layer_norm("embeddings.LayerNorm")
        self.layers: list[_Layer] = []
        for i in range(config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            q, k, v = (w.linear(p + f"attention.self.{part}") for part in ("query", "key", "value"))
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate([q[0], k[0], v[0]], axis=1)),
                    qkv_b=np.concatenate([q[1], k[1], v[1]]),
                    attn_out_w=(ao := w.linear(p + "attention.output.dense"))[0],
                    attn_out_b=ao[1],
                    attn_ln=w.layer_norm(p + "attention.output.LayerNorm"),
                    inter_w=(it := w.linear(p + "intermediate.dense"))[0],
                    inter_b=it[1],
                    out_w=(o := w.linear(p + "output.dense"))[0],
                    out_b=o[1],
                    out_ln=w.layer_norm(p + "output.LayerNorm"),
                )
            )
        head = "cls.predictions."
        self.transform_w, self.transform_b = (
            np.ascontiguousarray(w.get(head + "transform.dense.weight", encoder=False).T),
            w.get(head + "transform.dense.bias", encoder=False),
        )
        self.transform_ln = w.layer_norm(head + "transform.LayerNorm", encoder=False)
        # As transformers does: a tied decoder is the word embedding matrix, whatever the
        # file holds under the decoder's name (save_pretrained often leaves it out).
        decoder = (
            self.word_embeddings
            if config.tie_word_embeddings
            else w.get(head + "decoder.weight", encoder=False)
        )
        self.decoder_w = np.ascontiguousarray(decoder.T)  # (hidden, vocab)
        bias_name = head + "bias" if w.has(head + "bias") else head + "decoder.bias"
        self.decoder_b = w.get(bias_name, encoder=False)
        self._check_shapes(h)

    def _check_shapes(self, h: int) -> None:
        c = self.config
        expected: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = [
            ("word embeddings", self.word_embeddings.shape, (c.vocab_size, h)),
            ("position embeddings", self.position_embeddings.shape, (c.max_position_embeddings, h)),
            ("token type embeddings", self.token_type_embeddings.shape, (c.type_vocab_size, h)),
            ("MLM decoder (transposed)", self.decoder_w.shape, (h, c.vocab_size)),
            ("MLM bias", self.decoder_b.shape, (c.vocab_size,)),
        ]
        for i, layer in enumerate(self.layers):
            expected.append((f"layer {i} attention (fused)", layer.qkv_w.shape, (h, 3 * h)))
            expected.append(
                (f"layer {i} feed-forward", layer.inter_w.shape, (h, c.intermediate_size))
            )
            expected.append((f"layer {i} output", layer.out_w.shape, (c.intermediate_size, h)))
        for what, got, want in expected:
            if tuple(got) != want:
                raise ConfigurationError(
                    f"{what}: shape {list(got)}, but config.json implies {list(want)}"
                )

    def hidden_states(self, input_ids: NDArray[np.int64], attention_mask: NDArray[np.bool_]) -> F32:
        """Run the encoder on a padded batch.

        Args:
            input_ids: Token ids, shape (batch, length); padding ids are arbitrary.
            attention_mask: True for real tokens, False for padding, same shape.

        Returns:
            The last layer's hidden states, shape (batch, length, hidden). Rows at
            padding positions are computed but meaningless.
        """
        c = self.config
        batch, length = input_ids.shape
        heads = c.num_attention_heads
        head_dim = c.hidden_size // heads
        act = _ACTIVATIONS[c.hidden_act]
        eps = c.layer_norm_eps
        # Every token is segment 0: SPLADE encodes one text at a time, never pairs.
        x = (
            self.word_embeddings[input_ids]
            + self.position_embeddings[:length]
            + self.token_type_embeddings[0]
        )
        x = _layer_norm(x, self.embeddings_ln, eps).reshape(batch * length, c.hidden_size)
        # Additive key mask: padding keys get a huge negative score, so after softmax
        # they weigh exactly 0 and a text's vectors do not depend on its batch mates.
        key_mask = np.where(attention_mask, np.float32(0.0), _MASK_VALUE)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self.layers:
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(batch, length, 3, heads, head_dim)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # (batch, heads, length, head_dim)
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)  # (batch, heads, head_dim, length)
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)
            scores = (q @ k) * scale + key_mask
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * length, c.hidden_size)
            x = _layer_norm(context @ layer.attn_out_w + layer.attn_out_b + x, layer.attn_ln, eps)
            inner = act(x @ layer.inter_w + layer.inter_b)
            x = _layer_norm(inner @ layer.out_w + layer.out_b + x, layer.out_ln, eps)
        out: F32 = x.reshape(batch, length, c.hidden_size)
        return out

    def mlm_logits(self, hidden: F32) -> F32:
        """The MLM head: vocabulary logits for some hidden states.

        Args:
            hidden: Hidden states, shape (tokens, hidden).

        Returns:
            Logits, shape (tokens, vocab_size).
        """
        act = _ACTIVATIONS[self.config.hidden_act]
        t = act(hidden @ self.transform_w + self.transform_b)
        t = _layer_norm(t, self.transform_ln, self.config.layer_norm_eps)
        out: F32 = t @ self.decoder_w + self.decoder_b
        return out

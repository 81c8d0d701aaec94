"""A reader for the safetensors format, in numpy, so the SPLADE backend needs no torch.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian unsigned
header length N, N bytes of JSON mapping each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the end of the header; an optional
``"__metadata__"`` entry holds strings), then the raw little-endian data. The file is
memory-mapped and only the tensors asked for are read, each converted to float32.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._exceptions import ConfigurationError

__all__ = ["SafetensorsFile", "TensorInfo", "bf16_to_f32"]

#: Largest header accepted: the reference implementation refuses headers above 100 MB.
MAX_HEADER_BYTES = 100_000_000

# Float dtypes are converted to float32; integer ones (old BERT checkpoints store an
# int64 `position_ids` buffer) are listed so the header parses, but are never read.
_NUMPY_DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # no numpy bfloat16: read as raw 16 bits, widened by bf16_to_f32
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Where one tensor lives in the file.

    Attributes:
        dtype: The safetensors dtype name, e.g. ``"BF16"``.
        shape: The tensor's shape.
        begin: Offset of its first byte, from the start of the data section.
        end: Offset one past its last byte.
    """

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def bf16_to_f32(raw: NDArray[np.uint16]) -> NDArray[np.float32]:
    """Widen bfloat16 values, given as their raw 16 bits, to float32.

    bfloat16 is the upper half of a float32, so shifting the bits into the high 16 bits
    of a 32-bit word gives the same number exactly.

    Args:
        raw: The bfloat16 bit patterns.

    Returns:
        The same values as float32, same shape.
    """
    return (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)


class SafetensorsFile:
    """One ``.safetensors`` file, memory-mapped, read tensor by tensor as float32.

    Safe to share between threads once built: reads never modify it.

    Args:
        path: The file.

    Raises:
        ConfigurationError: If the file cannot be read or is not valid safetensors.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as fh:
                prefix = fh.read(8)
                if len(prefix) < 8:
                    raise ConfigurationError(f"{self.path}: too short to be a safetensors file")
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > MAX_HEADER_BYTES:
                    raise ConfigurationError(
                        f"{self.path}: safetensors header of {header_len} bytes is too large"
                    )
                header_bytes = fh.read(header_len)
            size = self.path.stat().st_size
        except OSError as exc:
            raise ConfigurationError(f"cannot read {self.path}: {exc}") from exc
        if len(header_bytes) != header_len:
            raise ConfigurationError(f"{self.path}: truncated safetensors header")
        try:
            header = json.loads(header_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"{self.path}: safetensors header is not JSON") from exc
        if not isinstance(header, dict):
            raise ConfigurationError(f"{self.path}: safetensors header is not a JSON object")
        self._data_start = 8 + header_len
        data_len = size - self._data_start
        self.tensors: dict[str, TensorInfo] = {
            name: self._parse_entry(name, entry, data_len)
            for name, entry in header.items()
            if name != "__metadata__"
        }
        # Mapped lazily and once; an empty data section cannot be memory-mapped.
        self._map: np.memmap[Any, np.dtype[np.uint8]] | None = None

    def _parse_entry(self, name: str, entry: Any, data_len: int) -> TensorInfo:
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{self.path}: malformed header entry {name!r}") from exc
        if dtype not in _NUMPY_DTYPES:
            raise ConfigurationError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype}")
        expected = math.prod(shape) * np.dtype(_NUMPY_DTYPES[dtype]).itemsize
        if not (0 <= begin <= end <= data_len and end - begin == expected):
            raise ConfigurationError(
                f"{self.path}: tensor {name!r} has offsets [{begin}, {end}] that do not fit "
                f"its shape {list(shape)} and dtype {dtype} in a {data_len}-byte data section"
            )
        return TensorInfo(dtype, shape, begin, end)

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def read(self, name: str) -> NDArray[np.float32]:
        """Read one floating-point tensor as a new float32 array (not a view of the file).

        Args:
            name: The tensor's name.

        Returns:
            Its values, converted to float32.

        Raises:
            KeyError: If the file has no tensor of that name.
            ConfigurationError: If the tensor is not a floating-point one.
        """
        info = self.tensors[name]
        if info.dtype not in _FLOAT_DTYPES:
            raise ConfigurationError(
                f"{self.path}: tensor {name!r} is {info.dtype}, expected a float type"
            )
        if info.begin == info.end:
            return np.zeros(info.shape, dtype=np.float32)
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._data_start)
        raw = self._map[info.begin : info.end].view(_NUMPY_DTYPES[info.dtype]).reshape(info.shape)
        if info.dtype == "BF16":
            return bf16_to_f32(raw)
        # astype copies, so the result does not keep the mapped file alive.
        return raw.astype(np.float32)

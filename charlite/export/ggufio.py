"""Small pieces shared by the GGUF writers: safetensors reading, base-model facts, Q/K layout.

Llama-architecture GGUF files store the Q and K projections with their rows permuted for the
rotary layout llama.cpp uses; anything written beside such a base must be permuted the same way:

>>> import numpy as np
>>> w = np.arange(8).reshape(8, 1)
>>> permute_qk(w, n_head=2)[:, 0].tolist()
[0, 2, 1, 3, 4, 6, 5, 7]
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlite.errors import ExportError
from charlite.gguf import read_gguf_header

# Hugging Face ``config.model_type`` -> GGUF ``general.architecture``.
HF_TO_GGUF_ARCH = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
}
# Architectures whose Q/K rows llama.cpp's converter permutes (Llama, Mistral, SmolLM: "llama").
PERMUTED_QK = {"llama"}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a Q or K projection (or of its LoRA B) in llama.cpp's rotary order."""
    rows = w.shape[0]
    if n_head <= 0 or rows % (2 * n_head):
        raise ExportError(f"cannot permute {rows} rows into {n_head} heads")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------------------------
# safetensors without torch (bf16 included)

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}


class SafetensorsFile:
    """A ``.safetensors`` file read lazily, tensor by tensor, as float32 (bf16 included)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(8)
                if len(head) != 8:
                    raise ValueError("file too short")
                (n,) = struct.unpack("<Q", head)
                if n > 100 * 1024 * 1024:
                    raise ValueError("header too large")
                header = json.loads(fh.read(n))
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r", offset=8 + n)
        except FileNotFoundError:
            raise ExportError(f"{self.path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ExportError(f"{self.path} is not a readable safetensors file ({exc})") from None
        self._header = {k: v for k, v in header.items() if k != "__metadata__"}

    def names(self) -> list[str]:
        return list(self._header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(x) for x in self._header[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        info = self._header[name]
        dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise ExportError(f"{self.path}: tensor {name} has unsupported type {dtype}")
        if end > self._data.shape[0] or start > end:
            raise ExportError(f"{self.path} is truncated (tensor {name} lies past its end)")
        raw = np.asarray(self._data[start:end])
        if dtype == "BF16":
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.view(_ST_DTYPES[dtype]).astype(np.float32)
        return arr.reshape(shape)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as a float32 numpy array."""
    f = SafetensorsFile(path)
    return {name: f.get(name) for name in f.names()}


# ---------------------------------------------------------------------------------------------
# Base GGUF facts


@dataclass
class BaseInfo:
    """What an adapter must agree with: architecture, blocks, heads and tensor shapes."""

    path: Path
    arch: str
    n_blocks: int
    head_count: int
    head_count_kv: int
    shapes: dict[str, tuple[int, ...]]
    """GGUF tensor name -> shape in GGUF order (ne: input size first)."""
    kv: dict[str, Any]

    @property
    def permutes_qk(self) -> bool:
        return self.arch in PERMUTED_QK


def base_info(path: Path) -> BaseInfo:
    """Read a base GGUF's header (tensor data is not touched)."""
    header = read_gguf_header(path)
    if header.kv.get("general.type") == "adapter":
        raise ExportError(f"{path} is a LoRA adapter, not a base model")
    arch = header.kv.get("general.architecture")
    if not arch:
        raise ExportError(f"{path} has no general.architecture")
    kv = header.kv
    n_blocks = int(kv.get(f"{arch}.block_count") or 0)
    heads = kv.get(f"{arch}.attention.head_count") or 0
    heads_kv = kv.get(f"{arch}.attention.head_count_kv") or heads
    if isinstance(heads, list) or isinstance(heads_kv, list):
        raise ExportError(f"not supported yet: {arch} with a different head count per layer")
    shapes = {name: shape for name, (shape, _) in header.tensors.items()}
    return BaseInfo(Path(path), str(arch), n_blocks, int(heads), int(heads_kv), shapes, kv)


def copy_kv(reader, writer, skip: set[str]) -> None:
    """Copy every key-value field of ``reader`` to ``writer`` (strings byte for byte)."""
    from gguf import GGUFValueType

    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in skip or not field.types:
            continue
        main = field.types[0]
        if main == GGUFValueType.STRING:
            writer.add_key_value(name, bytes(field.parts[field.data[0]]), main)
        elif main == GGUFValueType.ARRAY:
            sub = field.types[-1]
            if len(field.types) > 2:
                raise ExportError(f"not supported yet: nested array field {name}")
            if not field.data:
                continue  # the writer cannot write an empty array; nothing reads one
            if sub == GGUFValueType.STRING:
                values: Any = [bytes(field.parts[i]) for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_key_value(name, values, main, sub_type=sub)
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], main)

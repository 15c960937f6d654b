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
}
# Architectures whose Q/K rows the GGUF converter permutes.
PERMUTED_QK = {"llama"}
# Architectures whose LoRA adapters charlite can write (separate q/k/v/o and gate/up/down).
LORA_ARCHS = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a Q or K projection (or of its LoRA B) in llama.cpp's rotary order."""
    rows = w.shape[0]
    if n_head <= 0 or rows % (2 * n_head):
        raise ExportError(f"cannot permute {rows} rows into {n_head} heads")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------------------------
# safetensors without torch (bf16 included)

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}


def read_safetensors(path: Path, names: set[str] | None = None) -> dict[str, np.ndarray]:
    """Tensors of a ``.safetensors`` file as float32 numpy arrays (``names``: only these)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", head)
            if n > 100 * 1024 * 1024:
                raise ValueError("header too large")
            header = json.loads(fh.read(n))
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    except FileNotFoundError:
        raise ExportError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} is not a readable safetensors file ({exc})") from None
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__" or (names is not None and name not in names):
            continue
        dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise ExportError(f"{path}: tensor {name} has unsupported type {dtype}")
        if end > data.shape[0] or start > end:
            raise ExportError(f"{path} is truncated (tensor {name} lies past its end)")
        raw = np.asarray(data[start:end])
        if dtype == "BF16":
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.view(_ST_DTYPES[dtype]).astype(np.float32)
        out[name] = arr.reshape(shape)
    return out


def safetensors_names(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return [k for k in json.loads(fh.read(n)) if k != "__metadata__"]


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


def _scalar(field) -> Any:
    try:
        return field.contents()
    except Exception:
        return None


def base_info(path: Path) -> BaseInfo:
    """Read a base GGUF's header (tensor data is not touched)."""
    from gguf import GGUFReader

    from charlite.gguf_check import check_gguf

    info = check_gguf(path)
    if info.file_type == "adapter":
        raise ExportError(f"{path} is a LoRA adapter, not a base model")
    reader = GGUFReader(str(path), "r")
    arch = (
        _scalar(reader.fields["general.architecture"])
        if "general.architecture" in reader.fields
        else None
    )
    if not arch:
        raise ExportError(f"{path} has no general.architecture")
    kv = {}
    for key in (
        f"{arch}.block_count",
        f"{arch}.attention.head_count",
        f"{arch}.attention.head_count_kv",
    ):
        if key in reader.fields:
            kv[key] = _scalar(reader.fields[key])
    n_blocks = int(kv.get(f"{arch}.block_count") or 0)
    heads = kv.get(f"{arch}.attention.head_count") or 0
    heads_kv = kv.get(f"{arch}.attention.head_count_kv") or heads
    if isinstance(heads, list) or isinstance(heads_kv, list):
        raise ExportError(f"not supported yet: {arch} with a different head count per layer")
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
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

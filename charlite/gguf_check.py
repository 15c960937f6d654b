"""Check a GGUF file before llama.cpp opens it, so a bad file is an error, not an abort.

llama.cpp aborts the whole process on some malformed files. :func:`check_gguf` reads the
header and the tensor table with the ``gguf`` package and checks that every tensor lies inside
the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from charlite.errors import ModelError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFInfo:
    path: str
    architecture: str | None
    file_type: str  # "model" or "adapter"
    n_tensors: int
    kv: dict

    def get(self, key: str, default=None):
        return self.kv.get(key, default)


def check_gguf(path: Path | str) -> GGUFInfo:
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist", hint="check the path") from None
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a GGUF file")
    return _check(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _check(path: str, size: int, mtime_ns: int) -> GGUFInfo:
    bad = f"{path} is not a valid GGUF file"
    hint = "re-download or re-export it"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise ModelError(f"{bad} (no GGUF header)", hint=hint)
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path, "r")
    except Exception as exc:  # the reader raises many kinds on bad input
        raise ModelError(f"{bad} ({type(exc).__name__}: {str(exc)[:120]})", hint=hint) from None
    end = 0
    try:
        for t in reader.tensors:
            end = max(end, int(t.data_offset) + int(t.n_bytes))
    except Exception as exc:
        raise ModelError(f"{bad} (tensor table: {str(exc)[:120]})", hint=hint) from None
    if end > size:
        raise ModelError(f"{bad} (truncated: needs {end} bytes, has {size})", hint=hint)
    kv = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name not in (
            "tokenizer.ggml.model",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.bos_token_id",
        ):
            continue
        try:
            kv[name] = field.contents()
        except Exception:
            continue
    arch = kv.get("general.architecture")
    ftype = kv.get("general.type") or "model"
    return GGUFInfo(path, arch, ftype, len(reader.tensors), kv)


def file_sha256(path: Path | str, limit: int | None = None) -> str:
    """SHA-256 of a file (of its first ``limit`` bytes and its size when given: a fast identity)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if limit is None:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(limit))
            h.update(str(os.fstat(fh.fileno()).st_size).encode())
    return h.hexdigest()

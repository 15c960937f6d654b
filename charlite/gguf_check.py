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
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise ModelError(f"{bad} (unsupported GGUF version {version})", hint=hint)
    from charlite.errors import CharliteError
    from charlite.export.ggufio import read_gguf_header

    try:
        header = read_gguf_header(Path(path))
    except CharliteError as exc:
        raise ModelError(exc.message, hint=hint) from None
    except Exception as exc:  # any other malformation of the header
        raise ModelError(f"{bad} ({type(exc).__name__})", hint=hint) from None
    kv = header.kv
    arch = kv.get("general.architecture")
    ftype = kv.get("general.type") or "model"
    return GGUFInfo(path, arch, ftype, len(header.tensors), kv)


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


def tensor_shapes(path: Path | str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> GGUF dims (ne0 first) of a file that passes :func:`check_gguf`.

    Cached per file version: an adapter hot-swap checks the base's shapes on every switch, and
    parsing the base's header (its whole vocabulary) costs more than the swap itself.
    """
    info = check_gguf(path)
    st = Path(info.path).stat()
    return dict(_tensor_shapes(info.path, st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=32)
def _tensor_shapes(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from charlite.export.ggufio import read_gguf_header

    return tuple(
        (name, tuple(int(d) for d in dims))
        for name, (dims, _) in read_gguf_header(Path(path)).tensors.items()
    )


def check_adapter_matches_base(adapter: Path | str, base: Path | str) -> None:
    """Refuse a GGUF LoRA whose tensors do not fit ``base``, before llama.cpp sees it.

    llama.cpp would abort the process (or silently misbehave) on an adapter made for another
    base; here every ``X.weight.lora_a/b`` pair is checked against ``X.weight``.
    """
    a_info, b_info = check_gguf(adapter), check_gguf(base)
    if a_info.architecture != b_info.architecture:
        raise ModelError(
            f"adapter {Path(adapter).name} is for a {a_info.architecture} model, not {b_info.architecture}",
            hint="export the adapter from a run trained on this base",
        )
    ash, bsh = tensor_shapes(adapter), tensor_shapes(base)
    hint = "it was made for another base; export it from a run trained on this base"
    pairs = [n[: -len(".lora_a")] for n in ash if n.endswith(".lora_a")]
    if not pairs:
        raise ModelError(f"adapter {Path(adapter).name} has no LoRA tensors")
    for name in pairs:
        a, b, w = ash.get(name + ".lora_a"), ash.get(name + ".lora_b"), bsh.get(name)
        if b is None or w is None or len(a) != 2 or len(b) != 2 or len(w) != 2:
            raise ModelError(
                f"adapter {Path(adapter).name} does not fit {Path(base).name} ({name})", hint=hint
            )
        if a[0] != w[0] or b[1] != w[1] or a[1] != b[0]:
            raise ModelError(
                f"adapter {Path(adapter).name} does not fit {Path(base).name}: {name} is "
                f"{b[1]}x{a[0]} in the adapter, {w[1]}x{w[0]} in the model",
                hint=hint,
            )

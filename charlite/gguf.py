"""GGUF files: the one header reader, the checks before llama.cpp opens a file, the file hash.

llama.cpp aborts the whole process on some malformed files. :func:`check_gguf` reads the
header and the tensor table (:func:`read_gguf_header`, without touching tensor data) and checks
that every tensor lies inside the file; :func:`check_adapter_matches_base` checks that a LoRA
adapter's architecture and tensor shapes fit its base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from charlite.errors import CharliteError, ExportError, ModelError
from charlite.files import require_regular_file

GGUF_MAGIC = b"GGUF"


_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
GGUF_TYPES = {
    0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool",
    8: "string", 9: "array", 10: "u64", 11: "i64", 12: "f64",
}  # fmt: skip


@dataclass(frozen=True)
class GGUFHeader:
    """Key-values and tensor table of a GGUF file, read without touching tensor data."""

    kv: dict[str, Any]
    tensors: dict[str, tuple[tuple[int, ...], int]]
    """name -> (shape in GGUF order, ggml type)."""
    kinds: dict[str, int] = dataclasses.field(default_factory=dict)
    """key -> GGUF value type (:data:`GGUF_TYPES` names them), arrays included."""


def read_gguf_header(path: Path, arrays: tuple[str, ...] = ()) -> GGUFHeader:
    """A fast GGUF header reader: arrays are skipped unless named in ``arrays``.

    (``gguf.GGUFReader`` builds an object per vocabulary entry, which takes seconds.)
    """
    path = Path(path)
    st = path.stat()
    return _read_header(str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(sorted(arrays)))


HEADER_READ_LIMIT = 64 * 1024 * 1024
_FIRST_READ = 4 * 1024 * 1024


class _ShortHeader(ExportError):
    """The bytes read so far end inside the header: read more, up to the limit."""


@lru_cache(maxsize=16)
def _read_header(path: str, size: int, mtime_ns: int, arrays: tuple[str, ...]) -> GGUFHeader:
    # Headers are a few MB; read 4 MB first and more only when the header runs past it,
    # so opening a model does not read 64 MB of tensor data on every start.
    want = min(size, _FIRST_READ)
    while True:
        try:
            with open(path, "rb") as fh:
                data = fh.read(want)
        except OSError as exc:
            raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            return _parse_header(path, size, data, arrays)
        except _ShortHeader:
            limit = min(size, HEADER_READ_LIMIT)
            if want >= limit:
                raise ExportError(f"{path} is not a valid GGUF file (header cut short)") from None
            want = min(limit, want * 4)


class _Reader:
    """A cursor over the bytes read so far of a GGUF header; running off the end is _ShortHeader."""

    def __init__(self, path: str, data: bytes, pos: int = 0) -> None:
        self.path, self.data, self.pos = path, data, pos

    def take(self, fmt: str):
        n = struct.calcsize(fmt)
        if self.pos + n > len(self.data):
            raise _ShortHeader(f"{self.path} is not a valid GGUF file (header cut short)")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += n
        return value

    def string(self) -> str:
        n = self.take("<Q")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool):
        """One metadata value; an array not kept is skipped and gives None."""
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ExportError(f"{self.path} is not a valid GGUF file (value type {kind})")
        sub, count = self.take("<I"), self.take("<Q")
        if keep:
            return [self.value(sub, True) for _ in range(count)]
        if sub in _SCALARS:
            self.pos += struct.calcsize(_SCALARS[sub]) * count
        elif sub == _STRING:
            for _ in range(count):
                n = self.take("<Q")  # read before adding: ``pos += take()`` would use the old pos
                self.pos += n
        else:
            for _ in range(count):
                self.value(sub, False)
        return None


def _data_end(path: str, start: int, extents: list[tuple[int, tuple[int, ...], int]]) -> int:
    """Where the last tensor's data ends, for tensor data that begins at ``start``."""
    end = start
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        for offset, dims, kind in extents:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            n = 1
            for d in dims:
                n *= d
            end = max(end, start + offset + n // block * type_size)
    except (KeyError, ValueError):
        raise ExportError(f"{path} is not a valid GGUF file (unknown tensor type)") from None
    return end


def _parse_header(path: str, size: int, data: bytes, arrays: tuple[str, ...]) -> GGUFHeader:
    if data[:4] != b"GGUF":
        raise ExportError(f"{path} is not a GGUF file")
    r = _Reader(path, data, 4)
    r.take("<I")
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    kv: dict[str, Any] = {}
    kinds: dict[str, int] = {}
    for _ in range(n_kv):
        key = r.string()
        kind = r.take("<I")
        kinds[key] = kind
        got = r.value(kind, key in arrays or kind != _ARRAY)
        if got is not None:
            kv[key] = got
    tensors = {}
    extents = []
    for _ in range(n_tensors):
        name = r.string()
        dims = tuple(r.take("<Q") for _ in range(r.take("<I")))
        kind = r.take("<I")
        tensors[name] = (dims, kind)
        extents.append((r.take("<Q"), dims, kind))
    align = int(kv.get("general.alignment") or 32)
    end = _data_end(path, -(-r.pos // align) * align, extents)
    if end > size:
        raise ExportError(
            f"{path} is not a valid GGUF file (truncated: needs {end} bytes, has {size})"
        )
    return GGUFHeader(kv, tensors, kinds)


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
    # a FIFO would block the read below (and llama.cpp's), a device never ends
    require_regular_file(path, error=ModelError, what="GGUF file")
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
    try:
        header = read_gguf_header(Path(path))
    except CharliteError as exc:
        raise ModelError(exc.message, hint=hint) from None
    except Exception as exc:  # any other malformation of the header
        raise ModelError(f"{bad} ({type(exc).__name__})", hint=hint) from None
    kv = header.kv
    arch = kv.get("general.architecture")
    ftype = kv.get("general.type") or "model"
    _check_key_types(path, header.kinds, ADAPTER_KEY_TYPES if ftype == "adapter" else {})
    return GGUFInfo(path, arch, ftype, len(header.tensors), kv)


# Keys llama.cpp reads with a getter that aborts the process on any other type
# (``gguf_get_val_str`` / ``gguf_get_val_f32`` in its LoRA loader): each must have exactly this
# GGUF value type when present. A model's own keys are read with checked getters, which fail
# with an error instead; the two general keys are checked for every file all the same.
KEY_TYPES = {"general.architecture": "string", "general.type": "string"}
ADAPTER_KEY_TYPES = {"adapter.type": "string", "adapter.lora.alpha": "f32"}


def _check_key_types(path: str, kinds: dict[str, int], extra: dict[str, str]) -> None:
    for key, want in {**KEY_TYPES, **extra}.items():
        if key in kinds and GGUF_TYPES.get(kinds[key]) != want:
            got = GGUF_TYPES.get(kinds[key], f"type {kinds[key]}")
            raise ModelError(
                f"{path} is not a valid GGUF file ({key} is stored as {got}, not {want})",
                hint="re-download or re-export it",
            )


def file_sha256(path: Path | str, limit: int | None = None) -> str:
    """SHA-256 of a file (of its first ``limit`` bytes and its size when given: a fast identity)."""
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
    if a_info.file_type != "adapter":
        raise ModelError(f"{adapter} is not a LoRA adapter GGUF")
    if a_info.architecture != b_info.architecture:
        raise ModelError(
            f"adapter {adapter} is for a {a_info.architecture} model, not {b_info.architecture}",
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

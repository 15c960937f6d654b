"""Persona prefix cache: llama.cpp state saved after a character's system prompt.

Every session of a character starts with the same system message. Its evaluated state is
saved under ``CHARLITE_HOME/cache/persona/`` keyed by the model file, the adapter and the
exact prefix tokens, so a new session restores it instead of evaluating the prefix again.

File layout (``KEY.state``)::

    b"CHLPC\\x01" | u32 header length | header JSON | int32 tokens | llama state bytes

The header carries the SHA-256 of everything after it: a truncated or corrupt file is ignored
(and removed), never handed to llama.cpp. The folder is kept under a size bound by evicting
the least recently used entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlite.files import atomic_path
from charlite.home import cache_dir

MAGIC = b"CHLPC\x01"
FORMAT = 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def model_identity(path: Path | str | None) -> str:
    """A cheap identity of a model or adapter file: resolved path, size and mtime."""
    if path is None:
        return "none"
    st = os.stat(path)
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(model: Path | str, adapter: Path | str | None, tokens: list[int]) -> str:
    h = hashlib.sha256()
    h.update(model_identity(model).encode())
    h.update(b"\0")
    h.update(model_identity(adapter).encode())
    h.update(b"\0")
    h.update(np.asarray(tokens, dtype=np.int32).tobytes())
    return h.hexdigest()[:32]


@dataclass
class CachedPrefix:
    tokens: list[int]
    state: bytes


class PersonaCache:
    def __init__(self, root: Path | None = None, max_bytes: int | None = None):
        self.root = Path(root) if root else cache_dir("persona")
        self.max_bytes = max_bytes if max_bytes is not None else _env_max_bytes()

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.state"

    def load(self, key: str) -> CachedPrefix | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        entry = _decode(data)
        if entry is None:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return entry

    def save(self, key: str, tokens: list[int], state: bytes) -> None:
        if self.max_bytes <= 0:
            return
        payload = np.asarray(tokens, dtype=np.int32).tobytes() + state
        if len(payload) > self.max_bytes:
            return
        header = json.dumps(
            {
                "format": FORMAT,
                "n_tokens": len(tokens),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        ).encode()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with atomic_path(self._path(key)) as tmp:
                tmp.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + payload)
        except Exception:
            return  # a cache that cannot be written is only slower
        self.evict()

    def entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("*.state") if p.is_file()]

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.entries())

    def evict(self) -> None:
        files = sorted(self.entries(), key=lambda p: p.stat().st_mtime_ns)
        total = sum(p.stat().st_size for p in files)
        while files and total > self.max_bytes:
            victim = files.pop(0)
            total -= victim.stat().st_size
            with contextlib.suppress(OSError):
                victim.unlink()

    def clear(self) -> None:
        for p in self.entries():
            with contextlib.suppress(OSError):
                p.unlink()


def _env_max_bytes() -> int:
    """``CHARLITE_PERSONA_CACHE_MB`` (0 turns the cache off); a value that is not a number is
    ignored: the cache only saves time, it must never stop a chat."""
    env = os.environ.get("CHARLITE_PERSONA_CACHE_MB", "").strip()
    try:
        mb = float(env) if env else None
    except ValueError:
        mb = None
    if mb is None or mb != mb or mb in (float("inf"), float("-inf")):  # unset, NaN, infinite
        return DEFAULT_MAX_BYTES
    return max(0, int(mb * 1024 * 1024))


def _decode(data: bytes) -> CachedPrefix | None:
    try:
        if not data.startswith(MAGIC):
            return None
        (hlen,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        if hlen > 4096 or start + hlen > len(data):
            return None
        header = json.loads(data[start : start + hlen])
        payload = data[start + hlen :]
        if header.get("format") != FORMAT or hashlib.sha256(payload).hexdigest() != header.get(
            "sha256"
        ):
            return None
        n = int(header["n_tokens"])
        if n <= 0 or 4 * n > len(payload):
            return None
        tokens = np.frombuffer(payload[: 4 * n], dtype=np.int32).tolist()
        return CachedPrefix(tokens, payload[4 * n :])
    except (ValueError, KeyError, TypeError, struct.error):
        return None

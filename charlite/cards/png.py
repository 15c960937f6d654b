"""The PNG side of a character card: chunks read and written, the card's text chunks found.

A PNG card is an ordinary PNG image with the card in a text chunk: ``ccv3`` (V3, preferred) or
``chara`` (V2), each base64 of the card JSON. This module knows PNG structure only (chunk
lengths, types and CRCs, ``tEXt``/``zTXt``/``iTXt`` payloads, size limits); what the text
means is read in :mod:`charlite.cards.cardfile`.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

from charlite.errors import ProfileError

MAX_CHUNK_BYTES = 5 * 1024 * 1024
"""Largest card chunk inside a PNG (after decompression)."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYS = ("ccv3", "chara")  # in order of preference
TEXT_KINDS = (b"tEXt", b"zTXt", b"iTXt")


def mib(n: int) -> str:
    """A size in MiB for messages: ``5 MiB``, ``5.5 MiB``."""
    return f"{n / 1024 / 1024:.1f} MiB" if n % (1024 * 1024) else f"{n // 1024 // 1024} MiB"


def png_chunks(data: bytes, path: Path | str = "PNG") -> list[tuple[bytes, bytes]]:
    """The (type, payload) chunks of a PNG, checking structure, sizes and text-chunk CRCs."""
    if not data.startswith(PNG_SIGNATURE):
        raise ProfileError(f"{path}: not a PNG file (its first bytes are not a PNG signature)")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise ProfileError(f"{path}: the PNG is truncated (a chunk header is cut off)")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        name = kind.decode("latin-1")
        if not re.fullmatch(rb"[A-Za-z]{4}", kind):
            raise ProfileError(
                f"{path}: the PNG is corrupt (a chunk has the invalid type {kind!r})"
            )
        if kind in TEXT_KINDS and length > MAX_CHUNK_BYTES:
            raise ProfileError(
                f"{path}: a {name} chunk of {mib(length)} is over the {mib(MAX_CHUNK_BYTES)} limit for card data"
            )
        end = pos + 12 + length
        if end > len(data):
            raise ProfileError(f"{path}: the PNG is truncated (the {name} chunk is cut off)")
        payload = data[pos + 8 : pos + 8 + length]
        if kind in TEXT_KINDS:
            (crc,) = struct.unpack(">I", data[end - 4 : end])
            if zlib.crc32(kind + payload) & 0xFFFFFFFF != crc:
                raise ProfileError(f"{path}: the PNG is corrupt (CRC mismatch in a {name} chunk)")
        chunks.append((kind, payload))
        pos = end
        if kind == b"IEND":
            break
    if not chunks:
        raise ProfileError(f"{path}: the PNG is truncated (nothing after its signature)")
    if chunks[0][0] != b"IHDR":
        raise ProfileError(f"{path}: the PNG is corrupt (it does not start with an IHDR chunk)")
    if chunks[-1][0] != b"IEND":
        raise ProfileError(f"{path}: the PNG is truncated (no IEND chunk)")
    return chunks


def _inflate(data: bytes, path: Path, name: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_CHUNK_BYTES + 1)
    except zlib.error:
        raise ProfileError(f"{path}: the compressed {name} chunk is corrupt") from None
    if len(out) > MAX_CHUNK_BYTES or inflater.unconsumed_tail:
        raise ProfileError(
            f"{path}: the {name} chunk inflates past the {mib(MAX_CHUNK_BYTES)} limit"
        )
    return out


def png_text(
    chunks: list[tuple[bytes, bytes]], path: Path | str = "PNG", keys: tuple[str, ...] = CARD_KEYS
) -> dict[str, bytes]:
    """The text of ``tEXt``, ``zTXt`` and ``iTXt`` chunks whose lower-case keyword is one of
    ``keys`` (the card's, by default), by keyword; the first one wins."""
    path = Path(str(path))
    texts: dict[str, bytes] = {}
    for kind, payload in chunks:
        key = text_keyword(kind, payload)
        if key is None or key not in keys or key in texts:
            continue
        rest = payload.split(b"\0", 1)[1]
        if kind == b"zTXt":
            rest = _inflate(rest[1:], path, key)
        elif kind == b"iTXt":
            if len(rest) < 2:
                continue
            compressed, rest = rest[0], rest[2:]
            parts = rest.split(b"\0", 2)
            if len(parts) < 3:
                continue
            rest = _inflate(parts[2], path, key) if compressed else parts[2]
        texts[key] = rest
    return texts


def text_keyword(kind: bytes, payload: bytes) -> str | None:
    """The lower-case keyword of a text chunk, or None for any other chunk."""
    if kind not in TEXT_KINDS or b"\0" not in payload:
        return None
    return payload.split(b"\0", 1)[0].decode("latin-1").strip().lower()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_with_text(chunks: list[tuple[bytes, bytes]], texts: dict[str, bytes]) -> bytes:
    """A PNG of ``chunks`` (from :func:`png_chunks`) whose text chunks of the keywords in
    ``texts`` are replaced by ``tEXt`` chunks of that text, written before ``IEND``."""
    kept = [(k, p) for k, p in chunks if text_keyword(k, p) not in texts]
    new = [(b"tEXt", key.encode("latin-1") + b"\0" + body) for key, body in texts.items()]
    out = kept[:-1] + new + kept[-1:]
    return PNG_SIGNATURE + b"".join(png_chunk(k, p) for k, p in out)

"""Card files on disk: a ``.json`` card, or a ``.png`` image with the card in text chunks.

Reading takes the card JSON out of the file (the ``ccv3`` chunk of a PNG, else ``chara``, with a
warning when the preferred one is unreadable) and checks it (:mod:`charlite.cards.guards`);
writing puts a V3 card in ``ccv3`` and the same card as V2 in ``chara``, into the given
picture or a generated portrait.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

from charlite.cards.guards import parse_card_json
from charlite.cards.mapping import card_as_v2, card_from_profile, profile_from_card
from charlite.cards.png import (
    CARD_KEYS,
    MAX_CHUNK_BYTES,
    PNG_SIGNATURE,
    mib,
    png_chunks,
    png_text,
    png_with_text,
)
from charlite.cards.portrait import portrait_png
from charlite.errors import ProfileError
from charlite.files import read_bytes_limited, write_output
from charlite.profile import Profile

MAX_CARD_FILE_BYTES = 20 * 1024 * 1024
"""Largest card file (JSON or PNG) read."""


def load_card_profile(path: Path | str) -> Profile:
    """A profile from a Character Card ``.json`` or ``.png`` file."""
    path = Path(path)
    card, warnings = read_card(path)
    profile = profile_from_card(card, path)
    profile.warnings[:0] = warnings
    return profile


def read_card(path: Path | str) -> tuple[dict[str, Any], list[str]]:
    """The card JSON of a ``.json`` or ``.png`` file, and warnings about how it was read."""
    path = Path(path)
    raw = _read_bytes(path)
    if raw.startswith(PNG_SIGNATURE):
        return _card_from_png(raw, path)
    if path.suffix.lower() == ".png":
        raise ProfileError(f"{path}: not a PNG file (its first bytes are not a PNG signature)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProfileError(
            f"{path}: not UTF-8 text (byte {exc.start})", hint="save the card as UTF-8 JSON"
        ) from None
    return parse_card_json(text, path, "the file"), []


def _read_bytes(path: Path) -> bytes:
    return read_bytes_limited(
        path,
        max_bytes=MAX_CARD_FILE_BYTES,
        error=ProfileError,
        what="card file",
        too_big=lambda size: (
            f"{mib(size)} is over the {mib(MAX_CARD_FILE_BYTES)} limit for a card file"
        ),
    )


def _decode_chunk(key: str, payload: bytes, path: Path) -> dict[str, Any]:
    body = payload.strip()
    if body.startswith(b"{"):
        raw = body  # a few tools store the JSON itself
    else:
        compact = re.sub(rb"\s+", b"", body)
        compact += b"=" * (-len(compact) % 4)
        try:
            raw = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise ProfileError(f"{path}: the '{key}' chunk is not valid base64") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: the '{key}' chunk does not decode to UTF-8 JSON") from None
    return parse_card_json(text, path, f"the '{key}' chunk")


def _card_from_png(data: bytes, path: Path) -> tuple[dict[str, Any], list[str]]:
    texts = png_text(png_chunks(data, path), path)
    if not texts:
        raise ProfileError(
            f"{path}: this PNG holds no character card (no 'ccv3' or 'chara' text chunk)",
            hint="export the card from its app as a PNG card or as JSON",
        )
    warnings: list[str] = []
    error: ProfileError | None = None
    for key in CARD_KEYS:
        if key not in texts:
            continue
        try:
            card = _decode_chunk(key, texts[key], path)
        except ProfileError as exc:
            error = error or exc
            continue
        if error is not None:
            warnings.append(f"{error}; read the '{key}' chunk instead")
        return card, warnings
    assert error is not None
    raise error


def png_with_card(image: bytes, card: dict[str, Any], path: Path | str = "image") -> bytes:
    """``image`` with its card chunks replaced by ``ccv3`` (V3) and ``chara`` (V2) ``tEXt`` chunks."""
    chunks = png_chunks(image, path)
    texts = {}
    for key, value in (("ccv3", card), ("chara", card_as_v2(card))):
        body = base64.b64encode(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if len(body) > MAX_CHUNK_BYTES:
            raise ProfileError(
                f"the card is {mib(len(body))} as base64, over the {mib(MAX_CHUNK_BYTES)} limit of a card chunk"
            )
        texts[key] = body
    return png_with_text(chunks, texts)


def write_card(
    profile: Profile, path: Path | str, image: Path | str | None = None, *, force: bool = True
) -> dict[str, Any]:
    """Write ``profile`` as a ``.json`` or ``.png`` card; returns the card written.

    An existing file is replaced only with ``force``; a special file (``/dev/stdout``) is
    written into (see :func:`charlite.files.write_output`).
    """
    path = Path(path)
    card = card_from_profile(profile)
    suffix = path.suffix.lower()
    if suffix == ".json":
        if image is not None:
            raise ProfileError("--image is for PNG cards", hint="write FILE.png, or drop --image")
        write_output(path, json.dumps(card, indent=2, ensure_ascii=False) + "\n", force=force)
        return card
    if suffix != ".png":
        raise ProfileError(
            f"{path}: a card is written as .json or .png, not '{suffix or 'no extension'}'"
        )
    if image is not None:
        image = Path(image)
        raw = _read_bytes(image)
        base = raw if raw.startswith(PNG_SIGNATURE) else None
        if base is None:
            raise ProfileError(f"{image}: not a PNG file", hint="convert the picture to PNG first")
    else:
        base = portrait_png(profile.slug)
    data = png_with_card(base, card, image or "image")
    write_output(path, data, force=force)
    return card

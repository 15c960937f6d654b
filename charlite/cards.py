"""Character Cards V2/V3 in and out (SillyTavern and friends).

A card is JSON: ``{"spec": "chara_card_v3", "spec_version": "3.0", "data": {...}}`` (V2:
``chara_card_v2`` / ``2.0``), either as a ``.json`` file or base64 in a PNG ``tEXt`` chunk named
``ccv3`` (V3, preferred) or ``chara`` (V2).

Import maps a card onto a :class:`~charlite.profile.Profile`:

* ``description``, ``personality``, ``scenario`` become paragraphs (personality and scenario
  paragraphs under the headings "Personality" and "Scenario");
* ``character_book`` entries become paragraphs under "Lore: LABEL";
* ``first_mes`` and the ``<START>`` blocks of ``mes_example`` become ``example_dialogue``;
* ``{{char}}`` / ``{{user}}`` are written out as the character's and the visitor's names;
* everything else (``nickname``, ``tags``, ``creator_notes``, ``extensions``, unknown fields) is
  kept in ``metadata["card"]``, with the exact text of the fields above, so an export gives
  the card back unchanged when the profile was not edited.

Export writes a V3 card whose ``data`` also holds every V2 field (PNG cards carry both a
``ccv3`` and a ``chara`` chunk). charlite's own profile fields travel in
``data.extensions.charlite``, so import → export → import keeps every field.

>>> card = card_from_profile(profile_from_card(
...     {"spec": "chara_card_v2", "spec_version": "2.0",
...      "data": {"name": "Ada", "description": "{{char}} writes programs."}}))
>>> card["spec"], card["data"]["description"]
('chara_card_v3', '{{char}} writes programs.')
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import math
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from charlite.errors import ProfileError
from charlite.files import read_bytes_limited, write_output
from charlite.profile import (
    DEFAULT_USER,
    Paragraph,
    Profile,
    build_profile,
    slugify,
    split_paragraphs,
)

V2_SPEC, V2_VERSION = "chara_card_v2", "2.0"
V3_SPEC, V3_VERSION = "chara_card_v3", "3.0"

MAX_CARD_FILE_BYTES = 20 * 1024 * 1024
"""Largest card file (JSON or PNG) read."""
MAX_CHUNK_BYTES = 5 * 1024 * 1024
"""Largest card chunk inside a PNG (after decompression)."""
MAX_DEPTH = 64
"""Deepest nesting of JSON arrays/objects accepted in a card."""
MAX_NODES = 200_000
"""Most JSON values accepted in a card."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYS = ("ccv3", "chara")  # in order of preference

USED_FIELDS = (
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "character_book",
)
"""Card fields that become paragraphs or example dialogue."""
DEFAULT_FIELDS: dict[str, Any] = {
    "creator_notes": "",
    "system_prompt": "",
    "post_history_instructions": "",
    "alternate_greetings": [],
    "tags": [],
    "creator": "",
    "character_version": "",
    "extensions": {},
    "group_only_greetings": [],
}
"""Fields every exported card has (V2 requires them, V3 adds group_only_greetings)."""
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
PERSONALITY, SCENARIO, LORE = "Personality", "Scenario", "Lore: "
EXT_KEY = "charlite"
EXT_FORMAT = 1
_PROFILE_EXT_FIELDS = (
    "slug", "short_name", "era", "knowledge_cutoff", "home", "scene", "speaking_style",
    "traits", "facts", "license",
)  # fmt: skip

_MACROS = re.compile(r"\{\{\s*(char|user)\s*\}\}|<(BOT|USER)>", re.IGNORECASE)
_START = re.compile(r"^[ \t]*<START>[ \t]*$", re.IGNORECASE | re.MULTILINE)


# ---------------------------------------------------------------------------------------------
# Reading card JSON out of files


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
    return _parse_card_json(text, path, "the file"), []


def _read_bytes(path: Path) -> bytes:
    return read_bytes_limited(
        path,
        max_bytes=MAX_CARD_FILE_BYTES,
        error=ProfileError,
        what="card file",
        too_big=lambda size: (
            f"{_mib(size)} is over the {_mib(MAX_CARD_FILE_BYTES)} limit for a card file"
        ),
    )


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n % (1024 * 1024) else f"{n // 1024 // 1024} MiB"


def _parse_card_json(text: str, path: Path, where: str) -> dict[str, Any]:
    try:
        card = json.loads(text)
    except RecursionError:
        raise ProfileError(f"{path}: the card JSON in {where} is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"{path}: the card in {where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except ValueError as exc:  # an integer of thousands of digits (Python's int limit)
        raise ProfileError(
            f"{path}: the card in {where} holds a number charlite cannot read: {str(exc).split(';')[0]}"
        ) from None
    _check_tree(card, path)
    if not isinstance(card, dict):
        raise ProfileError(
            f"{path}: not a Character Card (the JSON is a {_type(card)}, not an object)"
        )
    return card


def _check_tree(value: Any, path: Path) -> None:
    """Refuse JSON that is too deep or too large, or holds text that cannot be saved as UTF-8 or
    numbers that are not JSON (NaN, Infinity, 1e400)."""
    stack = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ProfileError(f"{path}: the card has more than {MAX_NODES} JSON values")
        if depth > MAX_DEPTH:
            raise ProfileError(f"{path}: the card JSON is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            for k, v in item.items():
                _check_text(k, path)
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ProfileError(f"{path}: the card holds a number JSON cannot carry ({item})")


def _check_text(text: str, path: Path) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProfileError(
            f"{path}: the card holds invalid Unicode (an unpaired surrogate escape)"
        ) from None


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
        if kind in (b"tEXt", b"iTXt", b"zTXt") and length > MAX_CHUNK_BYTES:
            raise ProfileError(
                f"{path}: a {name} chunk of {_mib(length)} is over the {_mib(MAX_CHUNK_BYTES)} limit for card data"
            )
        end = pos + 12 + length
        if end > len(data):
            raise ProfileError(f"{path}: the PNG is truncated (the {name} chunk is cut off)")
        payload = data[pos + 8 : pos + 8 + length]
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
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
            f"{path}: the {name} chunk inflates past the {_mib(MAX_CHUNK_BYTES)} limit"
        )
    return out


def png_text(chunks: list[tuple[bytes, bytes]], path: Path | str = "PNG") -> dict[str, bytes]:
    """Text chunks by lower-case keyword (``tEXt``, ``zTXt`` and ``iTXt``); the first one wins."""
    path = Path(str(path))
    texts: dict[str, bytes] = {}
    for kind, payload in chunks:
        if kind not in (b"tEXt", b"zTXt", b"iTXt") or b"\0" not in payload:
            continue
        keyword, rest = payload.split(b"\0", 1)
        key = keyword.decode("latin-1").strip().lower()
        if key not in CARD_KEYS or key in texts:
            continue
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
    return _parse_card_json(text, path, f"the '{key}' chunk")


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


# ---------------------------------------------------------------------------------------------
# Card JSON -> Profile


def _type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "text",
        list: "list",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _text_field(data: dict, key: str, path: Path, where: str = "data") -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProfileError(f"{path}: field '{where}.{key}' must be text, not {_type(value)}")
    return value


def _list_of_text(data: dict, key: str, path: Path, where: str = "data") -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{path}: field '{where}.{key}' must be a list of text")
    return value


def card_data(card: dict[str, Any], path: Path | str = "card") -> tuple[dict[str, Any], list[str]]:
    """The ``data`` object of a V1, V2 or V3 card, and warnings."""
    path = Path(str(path))
    spec = card.get("spec")
    warnings: list[str] = []
    if spec is None and "data" not in card:
        if isinstance(card.get("name"), str) and any(
            k in card for k in ("description", "first_mes", "personality")
        ):
            return card, warnings  # V1: the fields at the top level
        raise ProfileError(
            f"{path}: not a Character Card (no 'spec' of chara_card_v2 or chara_card_v3)",
            hint="charlite reads Character Card V1/V2/V3 JSON and PNG cards",
        )
    if spec not in (V2_SPEC, V3_SPEC):
        if not isinstance(spec, str) or not spec.startswith("chara_card_v"):
            raise ProfileError(
                f"{path}: not a Character Card (spec {spec!r} is not chara_card_v2 or chara_card_v3)"
            )
        warnings.append(f"{path.name}: unknown card spec '{spec}'; read as V3")
    data = card.get("data")
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: field 'data' must be an object, not {_type(data)}")
    return data, warnings


def _check_types(data: dict[str, Any], path: Path) -> None:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        got = (
            "missing"
            if name is None
            else f"{_type(name)}, not text"
            if not isinstance(name, str)
            else "empty"
        )
        raise ProfileError(
            f"{path}: field 'data.name' is {got}", hint="a card needs the character's name"
        )
    for key in ("description", "personality", "scenario", "first_mes", "mes_example", "nickname",
                "creator_notes", "system_prompt", "post_history_instructions", "creator",
                "character_version"):  # fmt: skip
        _text_field(data, key, path)
    for key in ("tags", "alternate_greetings", "group_only_greetings"):
        _list_of_text(data, key, path)
    ext = data.get("extensions")
    if ext is not None and not isinstance(ext, dict):
        raise ProfileError(f"{path}: field 'data.extensions' must be an object, not {_type(ext)}")
    book = data.get("character_book")
    if book is None:
        return
    if not isinstance(book, dict):
        raise ProfileError(
            f"{path}: field 'data.character_book' must be an object, not {_type(book)}"
        )
    entries = book.get("entries", [])
    if not isinstance(entries, list):
        raise ProfileError(
            f"{path}: field 'data.character_book.entries' must be a list, not {_type(entries)}"
        )
    for i, entry in enumerate(entries):
        where = f"data.character_book.entries.{i}"
        if not isinstance(entry, dict):
            raise ProfileError(f"{path}: field '{where}' must be an object, not {_type(entry)}")
        _text_field(entry, "content", path, where)
        _text_field(entry, "name", path, where)
        _text_field(entry, "comment", path, where)
        _list_of_text(entry, "keys", path, where)
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ProfileError(
                f"{path}: field '{where}.enabled' must be true or false, not {_type(enabled)}"
            )


def substitute(text: str, char: str, user: str = DEFAULT_USER) -> str:
    """Write out a card's ``{{char}}`` / ``{{user}}`` (and V1 ``<BOT>`` / ``<USER>``) macros.

    >>> substitute("{{user}} meets {{char}}.", "Ada")
    'Visitor meets Ada.'
    """

    def repl(m: re.Match) -> str:
        word = (m.group(1) or m.group(2)).lower()
        return char if word in ("char", "bot") else user

    return _MACROS.sub(repl, text)


def _field_paragraphs(text: str, char: str, heading: str | None) -> list[Paragraph]:
    paragraphs = split_paragraphs(substitute(text, char))
    if heading is not None:
        return [Paragraph(text=p.text, heading=heading) for p in paragraphs]
    return paragraphs


def _entry_label(entry: dict[str, Any], index: int) -> str:
    for key in ("name", "comment"):
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            label = value
            break
    else:
        keys = [k for k in entry.get("keys") or [] if isinstance(k, str) and k.strip()]
        label = ", ".join(keys[:3]) or f"entry {index + 1}"
    label = " ".join(label.split())
    return label[:80]


def _lore_entries(book: dict[str, Any] | None) -> list[tuple[int, dict[str, Any]]]:
    """The entries of a lorebook that become knowledge: enabled, with content."""
    if not isinstance(book, dict):
        return []
    out = []
    for i, entry in enumerate(book.get("entries") or []):
        if isinstance(entry, dict) and entry.get("enabled", True) is not False:
            if _str(entry.get("content")).strip():
                out.append((i, entry))
    return out


def _lore_paragraphs(book: dict[str, Any] | None, char: str) -> list[Paragraph]:
    paragraphs = []
    for i, entry in _lore_entries(book):
        heading = LORE + _entry_label(entry, i)
        paragraphs.extend(_field_paragraphs(_str(entry.get("content")), char, heading))
    return paragraphs


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _card_paragraphs(fields: dict[str, Any], char: str) -> list[Paragraph]:
    """The paragraphs charlite makes of a card's text fields and lorebook."""
    return (
        _field_paragraphs(_str(fields.get("description")), char, None)
        + _field_paragraphs(_str(fields.get("personality")), char, PERSONALITY)
        + _field_paragraphs(_str(fields.get("scenario")), char, SCENARIO)
        + _lore_paragraphs(fields.get("character_book"), char)
    )


def _examples(first_mes: str, mes_example: str, char: str) -> list[str]:
    first_mes, mes_example = _str(first_mes), _str(mes_example)
    items = [substitute(first_mes, char).strip()] if first_mes.strip() else []
    for block in _START.split(mes_example):
        block = substitute(block, char).strip()
        if block:
            items.append(block)
    return items


def card_slug(name: str) -> str:
    """A slug for a card's name; names with no Latin letters get a short hash.

    >>> card_slug("Seraphina the Healer"), card_slug("セラフィナ")
    ('seraphina-the-healer', 'character-ee358f')
    """
    slug = slugify(name)
    if slug == "character" and "character" not in name.lower():
        slug = f"character-{_digest(name)[:6]}"
    return slug


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def profile_from_card(card: dict[str, Any], path: Path | str = "card") -> Profile:
    """Map card JSON (V1, V2 or V3) onto a :class:`Profile`."""
    path = Path(str(path))
    _check_tree(card, path)
    data, warnings = card_data(card, path)
    _check_types(data, path)
    data = copy.deepcopy(data)
    extensions = dict(data.get("extensions") or {})
    ext = extensions.pop(EXT_KEY, None)
    if ext is not None and not (isinstance(ext, dict) and ext.get("format") == EXT_FORMAT):
        warnings.append(
            f"{path.name}: ignored data.extensions.charlite (not a format {EXT_FORMAT} record)"
        )
        ext = None
    ext = ext or {}
    generated = ext.get("generated") if isinstance(ext.get("generated"), dict) else {}

    name = " ".join(data["name"].split())
    char = (
        ext.get("short_name")
        if isinstance(ext.get("short_name"), str) and ext.get("short_name")
        else None
    )
    char = char or (data.get("nickname") or "").strip() or name

    # the fields that become paragraphs/examples; ones charlite generated itself are skipped
    used: dict[str, Any] = {}
    for key in USED_FIELDS:
        value = data.get(key)
        if key in generated and isinstance(value, str) and _digest(value) == generated[key]:
            continue
        if value not in (None, "", {}):
            used[key] = value
    paragraphs = _card_paragraphs(used, char)
    if not paragraphs:
        raise ProfileError(
            f"{path}: the card has no description, personality, scenario or lorebook text",
            hint="a character needs some text to learn from",
        )
    examples = _examples(used.get("first_mes", ""), used.get("mes_example", ""), char)

    # everything else is kept for the export
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if key in USED_FIELDS or (key == "name" and value == name):
            continue
        if key == "extensions":
            value = extensions
        if key in DEFAULT_FIELDS and value == DEFAULT_FIELDS[key]:
            continue
        kept[key] = value
    top = {k: v for k, v in card.items() if k not in ("spec", "spec_version", "data")}
    if "spec" not in card and "data" not in card:
        top = {}  # V1: the top level is the data

    metadata = dict(ext.get("metadata") or {}) if isinstance(ext.get("metadata"), dict) else {}
    from_profile = ext.get("origin") == "profile"
    if not from_profile or kept or top:
        record: dict[str, Any] = {"fields": kept}
        originals = {k: v for k, v in used.items()}
        if originals:
            record["original"] = originals
        if top:
            record["top"] = top
        metadata["card"] = record

    values: dict[str, Any] = {"name": name, "slug": card_slug(name), "short_name": char}
    for key in _PROFILE_EXT_FIELDS:
        if key in ext:
            values[key] = ext[key]
    if "era" not in values or "knowledge_cutoff" not in values:
        warnings.append(
            f"{path.name} gives no era or knowledge cutoff; add 'era:' and 'knowledge_cutoff:' (a year) "
            "to the profile's front matter so the character knows what it cannot know "
            "('charlite show NAME' prints where the profile is)"
        )
    return build_profile(
        values,
        path,
        paragraphs=paragraphs,
        example_dialogue=examples,
        metadata=metadata,
        source=str(path),
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------
# Profile -> card JSON


def _render(paragraphs: list[Paragraph], keep_headings: bool = True) -> str:
    """Paragraphs as card text; a ``## heading`` line opens each new section."""
    chunks, heading = [], None
    for p in paragraphs:
        if keep_headings and p.heading and p.heading != heading:
            chunks.append(f"## {p.heading}\n{p.text}")
        else:
            chunks.append(p.text)
        heading = p.heading
    return "\n\n".join(chunks)


def _render_examples(items: list[str]) -> tuple[str, str]:
    first = items[0] if items else ""
    blocks = "\n".join(f"<START>\n{item}" for item in items[1:])
    return first, blocks


def _group(paragraphs: list[Paragraph]) -> dict[str, list[Paragraph]]:
    groups: dict[str, list[Paragraph]] = {
        "description": [],
        "personality": [],
        "scenario": [],
        "lore": [],
    }
    for p in paragraphs:
        if p.heading and p.heading.startswith(LORE):
            groups["lore"].append(p)
        elif p.heading == PERSONALITY:
            groups["personality"].append(p)
        elif p.heading == SCENARIO:
            groups["scenario"].append(p)
        else:
            groups["description"].append(p)
    return groups


def _rebuild_book(lore: list[Paragraph], template: dict[str, Any] | None) -> dict[str, Any] | None:
    if not lore and not template:
        return None
    book = copy.deepcopy(template) if isinstance(template, dict) else {}
    old = copy.deepcopy(book.get("entries") or [])
    used_ids: set[int] = set()
    by_label = {}
    for i, entry in _lore_entries(book):
        by_label.setdefault(_entry_label(entry, i), []).append(i)
    entries: list[dict[str, Any]] = []
    sections: list[tuple[str, list[str]]] = []
    for p in lore:
        label = (p.heading or LORE)[len(LORE) :]
        if sections and sections[-1][0] == label:
            sections[-1][1].append(p.text)
        else:
            sections.append((label, [p.text]))
    for n, (label, texts) in enumerate(sections):
        match = next((i for i in by_label.get(label, []) if i not in used_ids), None)
        if match is not None:
            used_ids.add(match)
            entry = copy.deepcopy(old[match])
        else:
            entry = {"keys": [label], "extensions": {}, "enabled": True, "insertion_order": n,
                     "use_regex": False, "constant": False, "name": label}  # fmt: skip
        entry["content"] = "\n\n".join(texts)
        entries.append(entry)
    # entries that never became knowledge (disabled or empty) are kept as they were
    knowledge = {i for i, _ in _lore_entries(book)}
    entries.extend(e for i, e in enumerate(old) if i not in knowledge and isinstance(e, dict))
    book["entries"] = entries
    book.setdefault("extensions", {})
    return book


def _card_text_fields(profile: Profile, record: dict[str, Any]) -> dict[str, Any]:
    """description/personality/scenario/character_book/first_mes/mes_example of a card-made profile."""
    char = profile.short_name
    original = record.get("original") if isinstance(record.get("original"), dict) else {}
    original = {
        k: v
        for k, v in original.items()
        if (isinstance(v, str) and k != "character_book")
        or (k == "character_book" and isinstance(v, dict))
    }
    out: dict[str, Any] = {}
    if _card_paragraphs(original, char) == profile.paragraphs:
        for key in ("description", "personality", "scenario"):
            out[key] = original.get(key, "")
        if original.get("character_book") is not None:
            out["character_book"] = copy.deepcopy(original["character_book"])
    else:
        groups = _group(profile.paragraphs)
        for key, heading in (
            ("description", None),
            ("personality", PERSONALITY),
            ("scenario", SCENARIO),
        ):
            orig = original.get(key, "")
            if isinstance(orig, str) and _field_paragraphs(orig, char, heading) == groups[key]:
                out[key] = orig
            else:
                out[key] = _render(groups[key], keep_headings=heading is None)
        book = original.get("character_book")
        if _lore_paragraphs(book, char) == groups["lore"] and book is not None:
            out["character_book"] = copy.deepcopy(book)
        else:
            rebuilt = _rebuild_book(groups["lore"], book)
            if rebuilt is not None:
                out["character_book"] = rebuilt
    first, blocks = original.get("first_mes", ""), original.get("mes_example", "")
    if _examples(first, blocks, char) == profile.example_dialogue:
        out["first_mes"], out["mes_example"] = first, blocks
    else:
        out["first_mes"], out["mes_example"] = _render_examples(profile.example_dialogue)
    return out


def _profile_text_fields(profile: Profile) -> tuple[dict[str, Any], dict[str, str]]:
    """Card text of a charlite profile, and digests of the fields charlite generated."""
    out: dict[str, Any] = {"description": _render(profile.paragraphs)}
    generated: dict[str, str] = {}
    style = []
    if profile.traits:
        style.append(f"{profile.short_name} is {', '.join(profile.traits)}.")
    if profile.speaking_style:
        style.append(profile.speaking_style.strip())
    scene = profile.default_scene
    out["personality"] = " ".join(style)
    out["scenario"] = f"{scene.location}. {scene.status}"
    if profile.example_dialogue:
        out["first_mes"], out["mes_example"] = _render_examples(profile.example_dialogue)
    else:
        out["first_mes"], out["mes_example"] = f"*{scene.status}*", ""
        generated["first_mes"] = _digest(out["first_mes"])
    for key in ("personality", "scenario"):
        if out[key]:
            generated[key] = _digest(out[key])
    return out, generated


def card_from_profile(profile: Profile) -> dict[str, Any]:
    """A Character Card V3 (whose ``data`` also holds every V2 field) for ``profile``."""
    try:  # YAML front matter can hold dates or binary: make every value JSON
        metadata = profile.model_dump(mode="json", include={"metadata"})["metadata"]
    except ValueError as exc:
        raise ProfileError(
            f"profile '{profile.slug}': its metadata holds a value a card cannot carry ({exc})",
            hint="edit the metadata in its profile.md",
        ) from None
    record = metadata.pop("card", None)
    from_card = isinstance(record, dict)
    record = record if from_card else {}
    kept = (
        copy.deepcopy(record.get("fields") or {}) if isinstance(record.get("fields"), dict) else {}
    )
    if from_card:
        text, generated = _card_text_fields(profile, record), {}
    else:
        text, generated = _profile_text_fields(profile)

    ext: dict[str, Any] = {"format": EXT_FORMAT, "origin": "card" if from_card else "profile"}
    dumped = profile.model_dump(
        mode="json", include=set(_PROFILE_EXT_FIELDS), exclude_defaults=True
    )
    ext.update({k: dumped[k] for k in _PROFILE_EXT_FIELDS if k in dumped})
    ext["slug"], ext["short_name"] = profile.slug, profile.short_name
    if metadata:
        ext["metadata"] = metadata
    if generated:
        ext["generated"] = generated

    data: dict[str, Any] = {"name": profile.name}
    data.update(
        {k: text[k] for k in ("description", "personality", "scenario", "first_mes", "mes_example")}
    )
    data.update(copy.deepcopy(DEFAULT_FIELDS))
    raw_name = kept.pop("name", None)
    data.update(kept)
    if isinstance(raw_name, str) and " ".join(raw_name.split()) == profile.name:
        data["name"] = raw_name  # the card's own spelling (extra spaces, line breaks)
    extensions = (
        dict(data.get("extensions") or {}) if isinstance(data.get("extensions"), dict) else {}
    )
    extensions[EXT_KEY] = ext
    data["extensions"] = extensions
    if "character_book" in text:
        data["character_book"] = text["character_book"]
    card: dict[str, Any] = {"spec": V3_SPEC, "spec_version": V3_VERSION, "data": data}
    top = record.get("top") if isinstance(record.get("top"), dict) else {}
    for key, value in top.items():
        # V1 fields at the top level (SillyTavern writes them) follow the data
        card.setdefault(key, copy.deepcopy(data[key] if key in V1_FIELDS else value))
    return card


def card_as_v2(card: dict[str, Any]) -> dict[str, Any]:
    """The same card under the V2 spec, for the ``chara`` chunk read by older apps."""
    return {**card, "spec": V2_SPEC, "spec_version": V2_VERSION}


# ---------------------------------------------------------------------------------------------
# PNG writing


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def portrait_png(seed: str, width: int = 256, height: int = 384) -> bytes:
    """A small generated portrait: a two-colour gradient and a silhouette, colours from ``seed``."""
    import numpy as np

    h = hashlib.sha256(seed.encode("utf-8")).digest()
    top, bottom = np.array(list(h[0:3]), float), np.array(list(h[3:6]), float)
    top = 60 + top * 0.6  # keep the colours mid-tone
    bottom = 20 + bottom * 0.4
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    img = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
    yy, xx = np.mgrid[0:height, 0:width]
    cx = width / 2
    head = (xx - cx) ** 2 + (yy - height * 0.38) ** 2 <= (width * 0.18) ** 2
    body = ((xx - cx) / (width * 0.34)) ** 2 + ((yy - height * 0.92) / (height * 0.3)) ** 2 <= 1
    img[head | body] = img[head | body] * 0.35
    pixels = img.clip(0, 255).astype(np.uint8)
    rows = np.concatenate(
        [np.zeros((height, 1), np.uint8), pixels.reshape(height, width * 3)], axis=1
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + png_chunk(b"IEND", b"")
    )


def png_with_card(image: bytes, card: dict[str, Any], path: Path | str = "image") -> bytes:
    """``image`` with its card chunks replaced by ``ccv3`` (V3) and ``chara`` (V2) ``tEXt`` chunks."""
    chunks = png_chunks(image, path)
    kept = []
    for kind, payload in chunks:
        if kind in (b"tEXt", b"zTXt", b"iTXt") and b"\0" in payload:
            key = payload.split(b"\0", 1)[0].decode("latin-1").strip().lower()
            if key in CARD_KEYS:
                continue
        kept.append((kind, payload))
    text = []
    for key, value in (("ccv3", card), ("chara", card_as_v2(card))):
        body = base64.b64encode(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if len(body) > MAX_CHUNK_BYTES:
            raise ProfileError(
                f"the card is {_mib(len(body))} as base64, over the {_mib(MAX_CHUNK_BYTES)} limit of a card chunk"
            )
        text.append((b"tEXt", key.encode("latin-1") + b"\0" + body))
    out = kept[:-1] + text + kept[-1:]  # before IEND
    return PNG_SIGNATURE + b"".join(png_chunk(k, p) for k, p in out)


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

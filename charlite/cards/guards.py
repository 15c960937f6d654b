"""What card JSON must be before it is mapped: size, depth, text, and the type of each field.

A card comes from anywhere (a website, a PNG of unknown origin), so it is checked before
charlite reads a field of it: a tree too deep or too large, text that is not Unicode, numbers
JSON cannot carry, and fields of the wrong type give one clear :class:`ProfileError`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from charlite.errors import ProfileError
from charlite.profile import walk_tree

MAX_DEPTH = 64
"""Deepest nesting of JSON arrays/objects accepted in a card."""
MAX_NODES = 200_000
"""Most JSON values accepted in a card."""

TEXT_FIELDS = ("description", "personality", "scenario", "first_mes", "mes_example", "nickname",
               "creator_notes", "system_prompt", "post_history_instructions", "creator",
               "character_version")  # fmt: skip
LIST_FIELDS = ("tags", "alternate_greetings", "group_only_greetings")


def parse_card_json(text: str, path: Path, where: str) -> dict[str, Any]:
    """The card object in ``text`` (read from ``where`` in ``path``), checked by :func:`check_tree`."""
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
    check_tree(card, path)
    if not isinstance(card, dict):
        raise ProfileError(
            f"{path}: not a Character Card (the JSON is a {type_name(card)}, not an object)"
        )
    return card


def check_tree(value: Any, path: Path) -> None:
    """Refuse JSON that is too deep or too large, or holds text that cannot be saved as UTF-8 or
    numbers that are not JSON (NaN, Infinity, 1e400)."""
    nodes = 0
    for item, depth, is_key in walk_tree(value):
        if is_key:
            _check_text(item, path)
            continue
        nodes += 1
        if nodes > MAX_NODES:
            raise ProfileError(f"{path}: the card has more than {MAX_NODES} JSON values")
        if depth > MAX_DEPTH:
            raise ProfileError(f"{path}: the card JSON is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, str):
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


def type_name(value: Any) -> str:
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


def _must_be_text(data: dict, key: str, path: Path, where: str = "data") -> None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ProfileError(f"{path}: field '{where}.{key}' must be text, not {type_name(value)}")


def _must_be_text_list(data: dict, key: str, path: Path, where: str = "data") -> None:
    value = data.get(key)
    if value is not None and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise ProfileError(f"{path}: field '{where}.{key}' must be a list of text")


def check_types(data: dict[str, Any], path: Path) -> None:
    """Refuse a card ``data`` object whose name is missing or whose fields have the wrong type."""
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        got = (
            "missing"
            if name is None
            else f"{type_name(name)}, not text"
            if not isinstance(name, str)
            else "empty"
        )
        raise ProfileError(
            f"{path}: field 'data.name' is {got}", hint="a card needs the character's name"
        )
    for key in TEXT_FIELDS:
        _must_be_text(data, key, path)
    for key in LIST_FIELDS:
        _must_be_text_list(data, key, path)
    ext = data.get("extensions")
    if ext is not None and not isinstance(ext, dict):
        raise ProfileError(
            f"{path}: field 'data.extensions' must be an object, not {type_name(ext)}"
        )
    _check_book(data.get("character_book"), path)


def _check_book(book: Any, path: Path) -> None:
    """The lorebook (``data.character_book``), if there is one: an object with a list of entries."""
    if book is None:
        return
    if not isinstance(book, dict):
        raise ProfileError(
            f"{path}: field 'data.character_book' must be an object, not {type_name(book)}"
        )
    entries = book.get("entries", [])
    if not isinstance(entries, list):
        raise ProfileError(
            f"{path}: field 'data.character_book.entries' must be a list, not {type_name(entries)}"
        )
    for i, entry in enumerate(entries):
        where = f"data.character_book.entries.{i}"
        if not isinstance(entry, dict):
            raise ProfileError(f"{path}: field '{where}' must be an object, not {type_name(entry)}")
        for key in ("content", "name", "comment"):
            _must_be_text(entry, key, path, where)
        _must_be_text_list(entry, "keys", path, where)
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ProfileError(
                f"{path}: field '{where}.enabled' must be true or false, not {type_name(enabled)}"
            )

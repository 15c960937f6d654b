"""Character Card JSON (V1, V2, V3) <-> :class:`~charlite.profile.Profile`.

Import maps a card onto a profile:

* ``description``, ``personality``, ``scenario`` become paragraphs (personality and scenario
  paragraphs under the headings "Personality" and "Scenario");
* ``character_book`` entries become paragraphs under "Lore: LABEL";
* ``first_mes`` and the ``<START>`` blocks of ``mes_example`` become ``example_dialogue``;
* ``{{char}}`` / ``{{user}}`` are written out as the character's and the visitor's names;
* everything else (``nickname``, ``tags``, ``creator_notes``, ``extensions``, unknown fields) is
  kept in ``metadata["card"]``, with the exact text of the fields above, so an export gives
  the card back unchanged when the profile was not edited.

Export writes a V3 card whose ``data`` also holds every V2 field. charlite's own profile fields
travel in ``data.extensions.charlite``, so import → export → import keeps every field.

>>> card = card_from_profile(profile_from_card(
...     {"spec": "chara_card_v2", "spec_version": "2.0",
...      "data": {"name": "Ada", "description": "{{char}} writes programs."}}))
>>> card["spec"], card["data"]["description"]
('chara_card_v3', '{{char}} writes programs.')
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

from charlite.cards.guards import check_tree, check_types, type_name
from charlite.errors import ProfileError
from charlite.profile import (
    DEFAULT_USER,
    Paragraph,
    Profile,
    build_profile,
    render_paragraphs,
    slugify,
    split_paragraphs,
)

V2_SPEC, V2_VERSION = "chara_card_v2", "2.0"
V3_SPEC, V3_VERSION = "chara_card_v3", "3.0"

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
# Card JSON -> Profile


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
        raise ProfileError(f"{path}: field 'data' must be an object, not {type_name(data)}")
    return data, warnings


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
    check_tree(card, path)
    data, warnings = card_data(card, path)
    check_types(data, path)
    data = copy.deepcopy(data)
    extensions = dict(data.get("extensions") or {})
    ext = _charlite_extension(extensions.pop(EXT_KEY, None), path, warnings)
    name = " ".join(data["name"].split())
    short_name = ext.get("short_name")
    char = short_name if isinstance(short_name, str) and short_name else None
    char = char or (data.get("nickname") or "").strip() or name

    used = _used_fields(data, ext)
    paragraphs = _card_paragraphs(used, char)
    if not paragraphs:
        raise ProfileError(
            f"{path}: the card has no description, personality, scenario or lorebook text",
            hint="a character needs some text to learn from",
        )
    examples = _examples(used.get("first_mes", ""), used.get("mes_example", ""), char)

    values: dict[str, Any] = {"name": name, "slug": card_slug(name), "short_name": char}
    values.update({key: ext[key] for key in _PROFILE_EXT_FIELDS if key in ext})
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
        metadata=_kept_metadata(card, data, extensions, ext, used, name),
        source=str(path),
        warnings=warnings,
    )


def _charlite_extension(ext: Any, path: Path, warnings: list[str]) -> dict[str, Any]:
    """charlite's own record in ``data.extensions.charlite``; {} (and a warning) for another."""
    if ext is not None and not (isinstance(ext, dict) and ext.get("format") == EXT_FORMAT):
        warnings.append(
            f"{path.name}: ignored data.extensions.charlite (not a format {EXT_FORMAT} record)"
        )
        return {}
    return ext or {}


def _used_fields(data: dict[str, Any], ext: dict[str, Any]) -> dict[str, Any]:
    """The fields that become paragraphs or examples; the ones charlite generated are skipped."""
    generated = ext.get("generated") if isinstance(ext.get("generated"), dict) else {}
    used: dict[str, Any] = {}
    for key in USED_FIELDS:
        value = data.get(key)
        if key in generated and isinstance(value, str) and _digest(value) == generated[key]:
            continue
        if value not in (None, "", {}):
            used[key] = value
    return used


def _kept_metadata(
    card: dict[str, Any],
    data: dict[str, Any],
    extensions: dict[str, Any],
    ext: dict[str, Any],
    used: dict[str, Any],
    name: str,
) -> dict[str, Any]:
    """The profile's metadata: the card's other fields, kept so an export gives them back."""
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
    if ext.get("origin") != "profile" or kept or top:
        record: dict[str, Any] = {"fields": kept}
        if used:
            record["original"] = dict(used)
        if top:
            record["top"] = top
        metadata["card"] = record
    return metadata


# ---------------------------------------------------------------------------------------------
# Profile -> card JSON


def _render(paragraphs: list[Paragraph], keep_headings: bool = True) -> str:
    """Paragraphs as card text; with ``keep_headings`` a ``## heading`` line opens each section."""
    if keep_headings:
        return render_paragraphs(paragraphs)
    return "\n\n".join(p.text for p in paragraphs)


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

"""Data formats in and out of a dataset, all rendered through :mod:`charlite.roleplay`.

Export (one record per experience):

* ``messages``: ``{"id", "kind", "messages": [{"role", "content"}, …]}`` chat messages;
* ``sharegpt``: ``{"id", "system", "conversations": [{"from": "human"|"gpt", "value"}, …]}``;
* ``character-llm``: Character-LLM's prompted SFT lines ``{"prompt", "output", "source"}``.

Import reads those three, Character-LLM's generated scenes (``{"type", "location",
"background", …}``) and experiences (``{"setting", "dialogue", "location", "background",
"source"}``), and charlite's own records, from a JSON array, a single JSON object or JSONL. Each
record is recognised by its keys, so one file may mix them. A record that cannot be read is
reported with its line number and skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from charlite import roleplay
from charlite.errors import DataError
from charlite.experience.dataset import Dataset, now
from charlite.experience.pipeline import _remove_if_empty
from charlite.experience.records import is_character
from charlite.experience.schemas import DialogueTurn, Experience, SceneRecord
from charlite.files import JsonlWriter, read_text_file, repair_jsonl
from charlite.profile import Profile, Scene

EXPORT_FORMATS = ("sharegpt", "messages", "character-llm")
MAX_IMPORT_BYTES = 512 * 1024 * 1024
IMPORT_MIN_TURNS = 2
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}


# ---------------------------------------------------------------------------------------------
# Export


def to_messages(profile: Profile, exp: Experience) -> list[dict[str, str]]:
    return roleplay.to_messages(profile.short_name, profile.name, exp.scene(), exp.turns())


def export_record(profile: Profile, exp: Experience, fmt: str) -> dict[str, Any]:
    """One experience in an export format.

    >>> from charlite.profile import Paragraph
    >>> p = Profile(name="Ada Lovelace", slug="ada", short_name="Ada",
    ...             paragraphs=[Paragraph(text="Ada was born in 1815.")])
    >>> e = Experience(id="e-1", location="London", status="A salon.", dialogue=[
    ...     DialogueTurn(role="Babbage", content="Hello."),
    ...     DialogueTurn(role="Ada", action="speaking", content="Good evening.")])
    >>> export_record(p, e, "character-llm")["output"]
    'Babbage (speaking): Hello.<|eot|>\\nAda (speaking): Good evening.<|eot|>'
    """
    if fmt == "messages":
        return {"id": exp.id, "kind": exp.kind, "messages": to_messages(profile, exp)}
    if fmt == "sharegpt":
        messages = to_messages(profile, exp)
        return {
            "id": exp.id,
            "kind": exp.kind,
            "system": messages[0]["content"],
            "conversations": [
                {"from": "gpt" if m["role"] == "assistant" else "human", "value": m["content"]}
                for m in messages[1:]
            ],
        }
    if fmt == "character-llm":
        return {
            "prompt": roleplay.character_llm_prompt(profile.name, exp.scene()),
            "output": roleplay.character_llm_output(exp.turns()),
            "source": f"charlite:{profile.slug}:{exp.kind}:{exp.id}",
        }
    raise DataError(
        f"unknown export format '{fmt}'", hint=f"use one of {', '.join(EXPORT_FORMATS)}"
    )


def export_records(
    profile: Profile,
    dataset: Dataset,
    fmt: str,
    stages: tuple[str, ...] = ("experiences", "protective"),
) -> list[dict[str, Any]]:
    if fmt not in EXPORT_FORMATS:
        raise DataError(
            f"unknown export format '{fmt}'", hint=f"use one of {', '.join(EXPORT_FORMATS)}"
        )
    out = []
    for stage in stages:
        for exp in dataset.experiences(stage):
            if exp.problems(profile.short_name, min_turns=IMPORT_MIN_TURNS):
                continue
            out.append(export_record(profile, exp, fmt))
    return out


def dumps_records(records: list[dict[str, Any]], as_array: bool) -> str:
    if as_array:
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


# ---------------------------------------------------------------------------------------------
# Reading an import file


@dataclass
class Item:
    where: str
    """``line N`` (JSONL, or an array element's first line)."""
    data: Any


def _decode(path: Path) -> str:
    return read_text_file(
        path,
        max_bytes=MAX_IMPORT_BYTES,
        error=DataError,
        what="data file",
        too_big=lambda size: (
            f"{size // 2**20} MiB is over the {MAX_IMPORT_BYTES // 2**20} MiB import limit"
        ),
        utf8_hint="import JSON or JSONL files",
    )


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _array_items(text: str, start: int) -> Iterator[Item]:
    """The elements of the top-level JSON array starting at ``start``, with their line numbers."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\r\n]*")
    pos = ws.match(text, start + 1).end()
    if text.startswith("]", pos):
        return
    while True:
        item, end = decoder.raw_decode(text, pos)
        yield Item(f"line {_line_of(text, pos)}", item)
        pos = ws.match(text, end).end()
        if text.startswith(",", pos):
            pos = ws.match(text, pos + 1).end()
            continue
        break


def read_items(path: Path) -> list[Item]:
    """The records of a JSON array, a single JSON object or a JSONL file."""
    try:
        return _read_items(path)
    except RecursionError:  # json raises it on arrays/objects nested thousands deep
        raise DataError(f"{path}: the JSON is nested too deeply to be a record") from None


def _read_items(path: Path) -> list[Item]:
    text = _decode(Path(path))
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path} is empty")
    if stripped.startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
        except ValueError as exc:  # an integer of thousands of digits (Python's int limit)
            raise DataError(f"{path}: not valid JSON: {str(exc).split(';')[0]}") from None
        return list(_array_items(text, len(text) - len(stripped)))
    if stripped.startswith("{"):
        try:
            whole = json.loads(text)
        except ValueError:  # JSONDecodeError, or an integer over Python's digit limit
            whole = None
        if isinstance(whole, dict):
            if isinstance(whole.get("data"), list):
                return [Item(f"data[{i}]", d) for i, d in enumerate(whole["data"])]
            return [Item("line 1", whole)]
    items = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            items.append(Item(f"line {n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            items.append(Item(f"line {n}", _Bad(f"not valid JSON ({exc.msg})")))
        except ValueError as exc:  # an integer over Python's digit limit
            items.append(Item(f"line {n}", _Bad(f"not valid JSON ({str(exc).split(';')[0]})")))
    return items


@dataclass
class _Bad:
    reason: str


# ---------------------------------------------------------------------------------------------
# Converting records


class BadRecord(Exception):
    pass


def detect(data: Any) -> str:
    """The format of one record, from its keys."""
    if isinstance(data, _Bad):
        raise BadRecord(data.reason)
    if not isinstance(data, dict):
        raise BadRecord(f"a JSON {type(data).__name__}, not a record object")
    if isinstance(data.get("conversations"), list):
        return "sharegpt"
    if isinstance(data.get("messages"), list):
        return "messages"
    if "prompt" in data and "output" in data:
        return "character-llm"
    if isinstance(data.get("dialogue"), list):
        return "experience"
    if "location" in data and "background" in data:
        return "scene"
    raise BadRecord(
        "not a scene, experience, ShareGPT, messages or Character-LLM record "
        f"(keys: {', '.join(sorted(map(str, data))[:6]) or 'none'})"
    )


def _record_id(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return "i-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRecord(f"'{what}' is missing or empty")
    return value.strip()


def _is_character(profile: Profile, label: str) -> bool:
    return is_character(profile, label)


def _dialogue(profile: Profile, turns: list[roleplay.Turn]) -> list[DialogueTurn]:
    out = []
    for t in turns:
        role = " ".join(str(t.role).split())
        content = str(t.content).strip()
        if not role or not content:
            raise BadRecord("a turn has no role or no content")
        if _is_character(profile, role):
            out.append(
                DialogueTurn(
                    role=profile.short_name, action=t.action or "speaking", content=content
                )
            )
        elif t.action == "thinking":
            raise BadRecord(f"'{role}' thinks, but only {profile.short_name} may think")
        else:
            out.append(DialogueTurn(role=role[:80], action=None, content=content))
    return out


def _scene_from_system(profile: Profile, system: str | None) -> Scene:
    if system:
        who, location, status = roleplay.parse_character_llm_prompt(system)
        if who and not _is_character(profile, who):
            raise BadRecord(f"the record is about {who}, not {profile.name}")
        if location and status:
            return Scene(location=location, status=status)
    return profile.default_scene


def _experience(
    profile: Profile, data: Any, fmt: str, scene: Scene, turns: list[roleplay.Turn], kind: str
) -> Experience:
    exp = Experience(
        id=_record_id(data),
        kind=kind,  # type: ignore[arg-type]
        location=scene.location,
        status=scene.status,
        dialogue=_dialogue(profile, turns),
        source=f"import:{fmt}",
    )
    problems = exp.problems(profile.short_name, min_turns=IMPORT_MIN_TURNS)
    if problems:
        raise BadRecord(f"not a usable dialogue ({', '.join(problems)})")
    return exp


def _kind(data: dict) -> str:
    if data.get("kind") == "protective":
        return "protective"
    source = str(data.get("source") or "")
    return "protective" if "protect" in source.lower() else "experience"


def _from_scene(data: dict) -> SceneRecord:
    """A Character-LLM scene record."""
    return SceneRecord(
        id=_record_id(data),
        paragraph_id=data.get("paragraph_id")
        if isinstance(data.get("paragraph_id"), int)
        else None,
        type=str(data.get("type") or "chat")[:40],
        location=_text(data.get("location"), "location"),
        background=_text(data.get("background"), "background"),
        source="import:character-llm",
    )


def _from_experience(profile: Profile, data: dict) -> Experience:
    """A Character-LLM experience record (a scene with its dialogue turns)."""
    turns = []
    for t in data["dialogue"]:
        if not isinstance(t, dict):
            raise BadRecord("a dialogue turn is not an object")
        action = str(t.get("action") or "").strip().strip("()").lower() or None
        if action not in (None, "thinking", "speaking"):
            raise BadRecord(f"unknown action '{t.get('action')}'")
        turns.append(roleplay.Turn(str(t.get("role") or ""), str(t.get("content") or ""), action))  # type: ignore[arg-type]
    background = data.get("background") or data.get("status")
    if not background and isinstance(data.get("setting"), list):
        background = " ".join(str(s) for s in data["setting"])
    scene = Scene(
        location=_text(data.get("location"), "location"),
        status=_text(background, "background"),
    )
    return _experience(profile, data, "character-llm", scene, turns, _kind(data))


def _from_prompted(profile: Profile, data: dict, fmt: str) -> Experience:
    """A Character-LLM prompted record (a system prompt and the labelled output)."""
    prompt, output = (
        _text(data.get("prompt"), "prompt"),
        _text(data.get("output"), "output"),
    )
    scene = _scene_from_system(profile, prompt)
    labels = [m.group("role").strip() for m in roleplay._CLLM_LINE.finditer(output)]
    mine = next((label for label in labels if _is_character(profile, label)), None)
    if mine is None:
        raise BadRecord(f"{profile.short_name} never speaks in the output")
    turns = roleplay.parse_character_llm_output(output, mine)
    return _experience(profile, data, fmt, scene, turns, _kind(data))


def _chat_messages(data: dict, fmt: str) -> list[dict[str, str]]:
    """The role/content messages of a ShareGPT or OpenAI-style record."""
    messages = []
    if fmt == "sharegpt":
        for m in data["conversations"]:
            if not isinstance(m, dict) or not isinstance(m.get("value"), str):
                raise BadRecord("a conversation turn has no 'value'")
            role = SHAREGPT_ROLES.get(str(m.get("from", "")).lower())
            if role is None:
                raise BadRecord(f"unknown speaker '{m.get('from')}' (use human, gpt or system)")
            messages.append({"role": role, "content": m["value"]})
        if isinstance(data.get("system"), str):
            messages.insert(0, {"role": "system", "content": data["system"]})
        return messages
    for m in data["messages"]:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise BadRecord("a message needs a role of system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise BadRecord("a message has no text content")
        messages.append({"role": m["role"], "content": m["content"]})
    return messages


def _from_chat(profile: Profile, data: dict, fmt: str) -> Experience:
    """A chat-messages record (ShareGPT or OpenAI-style): the system message sets the scene."""
    messages = _chat_messages(data, fmt)
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    scene = _scene_from_system(profile, system)
    turns = roleplay.from_messages(
        profile.short_name, [m for m in messages if m["role"] != "system"]
    )
    return _experience(profile, data, fmt, scene, turns, _kind(data))


def convert(profile: Profile, data: Any) -> tuple[str, SceneRecord | Experience]:
    """One import record as a charlite record; raises :class:`BadRecord` with the reason."""
    fmt = detect(data)
    try:
        if fmt == "scene":
            return "character-llm-scene", _from_scene(data)
        if fmt == "experience":
            return "character-llm", _from_experience(profile, data)
        if fmt == "character-llm":
            return fmt, _from_prompted(profile, data, fmt)
        return fmt, _from_chat(profile, data, fmt)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BadRecord(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


# ---------------------------------------------------------------------------------------------
# Importing into a dataset


@dataclass
class ImportResult:
    dataset: str
    path: str
    records: dict[str, int] = field(default_factory=dict)
    """New records per stage."""
    formats: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    """(where, why) of each skipped record."""


def _convert_all(
    profile: Profile, file: Path, result: ImportResult
) -> list[tuple[str, SceneRecord | Experience]]:
    """Every record of ``file`` that converts (the rest noted in ``result.bad``); none is an error."""
    converted: list[tuple[str, SceneRecord | Experience]] = []
    for item in read_items(file):
        try:
            fmt, record = convert(profile, item.data)
        except BadRecord as exc:
            result.bad.append((item.where, str(exc)))
            continue
        converted.append((fmt, record))
    if not converted:
        first = f" ({result.bad[0][0]}: {result.bad[0][1]})" if result.bad else ""
        raise DataError(
            f"{file}: no record could be imported{first}",
            hint="import Character-LLM scenes/experiences/prompted JSONL, ShareGPT or messages JSONL",
        )
    return converted


def _append_records(
    dataset: Dataset,
    converted: list[tuple[str, SceneRecord | Experience]],
    result: ImportResult,
) -> Counter[str]:
    """Append the records ``dataset`` does not hold yet to their stage files; per format, how many."""
    seen = {stage: dataset.ids(stage) for stage in ("scenes", "experiences", "protective")}
    writers: dict[str, JsonlWriter] = {}
    formats: Counter[str] = Counter()
    try:
        for fmt, record in converted:
            stage = (
                "scenes"
                if isinstance(record, SceneRecord)
                else ("protective" if record.kind == "protective" else "experiences")
            )
            if record.id in seen[stage]:
                result.duplicates += 1
                continue
            seen[stage].add(record.id)
            if stage not in writers:
                writers[stage] = JsonlWriter(dataset.file(stage))
            writers[stage].write(record.model_dump(mode="json"))
            result.records[stage] = result.records.get(stage, 0) + 1
            formats[fmt] += 1
    finally:
        for w in writers.values():
            w.close()
    return formats


def import_file(profile: Profile, file: Path, dataset: Dataset) -> ImportResult:
    """Import ``file`` into ``dataset``; bad records are skipped and listed in the result."""
    file = Path(file)
    result = ImportResult(dataset.label, str(dataset.path))
    converted = _convert_all(profile, file, result)
    existed = dataset.path.exists()
    dataset.create()
    try:
        with dataset.lock("import"):
            manifest = dataset.read_manifest() or dataset.new_manifest(profile.digest())
            for stage in ("scenes", "experiences", "protective"):
                repair_jsonl(dataset.file(stage))
            formats = _append_records(dataset, converted, result)
            result.formats = dict(formats)
            manifest.setdefault("sources", []).append(
                {
                    "file": str(file.resolve()),
                    "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
                    "formats": dict(formats),
                    "records": dict(result.records),
                    "duplicates": result.duplicates,
                    "skipped": len(result.bad),
                    "imported": now(),
                }
            )
            if manifest.get("status") in (None, "empty"):
                manifest["status"] = "imported"
            dataset.write_manifest(manifest)
    except BaseException:
        if not existed:
            _remove_if_empty(dataset.path)
        raise
    return result

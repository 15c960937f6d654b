"""Interview results files: charlite's own and the paper's single-turn result files.

charlite writes (``format`` 1)::

    {"format": 1, "kind": "interview", "mode": "single" | "multi", "turns": 0,
     "character": {"slug", "name", "short_name", "profile_digest"},
     "model": {"spec", "label", "prompted", "artifact": {...}},
     "interviewer": null | {"spec", "label"},
     "setting": {"location", "status", "interviewer": "Man"},
     "questions_source": "...", "questions": [{"topic_id", "topic", "question"}],
     "items": [{"index", "topic_id", "topic", "question", "reply": [{"role", "action", "content"}],
                "thinking", "speaking", "seconds", ...}],
     "timings": {...}, "complete": bool}

Multi-turn items also hold ``exchanges`` (one per question, each with its ``reply``). The
paper's files are a bare list ``[{"topic_id", "question", "reply": [{"role", "action",
"content"}]}]``; they carry no character, which is found from the reply roles or the file name,
or given with ``--character``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlite import roleplay
from charlite.errors import DataError
from charlite.eval.question_bank import TOPICS, normalise_topic_id
from charlite.files import read_json_or_lines

RESULTS_FORMAT = 1
RESULTS_KIND = "interview"


# ---------------------------------------------------------------------------------------------
# Replies in the paper's form: [{"role", "action": "(thinking)" | "(speaking)", "content"}]


def reply_list(role: str, parts: list[roleplay.ReplyPart]) -> list[dict[str, str]]:
    return [
        {"role": role, "action": f"({p.action})", "content": p.content.strip()}
        for p in parts
        if p.content.strip()
    ]


def _action(value: Any) -> str:
    text = str(value or "").strip().strip("()").lower()
    return "thinking" if text.startswith("think") else "speaking"


def split_reply(reply: list[dict[str, Any]]) -> tuple[str, str]:
    """(thinking, speaking) of a reply list."""
    thinking, speaking = [], []
    for line in reply:
        content = str(line.get("content") or "").strip()
        if not content:
            continue
        (thinking if _action(line.get("action")) == "thinking" else speaking).append(content)
    return "\n".join(thinking), "\n".join(speaking)


def interaction_lines(
    question: str, reply: list[dict[str, Any]], interviewer: str = roleplay.INTERVIEWER
) -> list[str]:
    """``Man: question`` then ``Name (thinking): …`` lines, as a judge reads them."""
    lines = [f"{interviewer}: {question}"]
    for line in reply:
        content = str(line.get("content") or "").strip()
        if content:
            lines.append(
                f"{line.get('role') or 'Character'} ({_action(line.get('action'))}): {content}"
            )
    return lines


# ---------------------------------------------------------------------------------------------
# Loaded results


@dataclass
class Exchange:
    """One question and the character's reply to it."""

    question: str
    reply: list[dict[str, Any]]
    thinking: str
    speaking: str
    finish_reason: str | None = None
    reask_of: int | None = None


@dataclass
class Item:
    """One judged unit: a single-turn question and reply, or a whole multi-turn interview."""

    index: int
    topic_id: str
    topic: str
    question: str
    exchanges: list[Exchange]
    answer_keywords: list[str] | None = None

    @property
    def multi(self) -> bool:
        return len(self.exchanges) > 1

    def key(self) -> str:
        """A hash of the question and replies: a judgement is reused only for the same text."""
        payload = json.dumps(
            [self.question] + [[e.question, e.reply] for e in self.exchanges],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:12]

    def transcript(self, interviewer: str = roleplay.INTERVIEWER) -> list[str]:
        lines: list[str] = []
        for e in self.exchanges:
            lines.extend(interaction_lines(e.question, e.reply, interviewer))
        return lines


@dataclass
class Results:
    path: Path
    source_format: str
    """"charlite" or "paper"."""
    mode: str
    """"single" or "multi"."""
    character: str | None
    items: list[Item]
    model: str = "unknown"
    setting: dict[str, str] = field(default_factory=dict)
    label: str = ""

    @property
    def interviewer(self) -> str:
        return self.setting.get("interviewer") or roleplay.INTERVIEWER


def _read(path: Path) -> Any:
    # the paper's multi-turn files and some exports are JSON lines
    return read_json_or_lines(
        path,
        what="results file",
        empty_hint="run 'charlite interview NAME -o FILE' to make a results file",
        unreadable=lambda exc: DataError(f"{path} is not valid JSON: {exc}"),
    )


def _exchange(data: dict[str, Any], where: str) -> Exchange:
    reply = data.get("reply")
    if not isinstance(reply, list) or not all(isinstance(r, dict) for r in reply):
        raise DataError(f"{where}: 'reply' must be a list of {{role, action, content}}")
    thinking, speaking = split_reply(reply)
    return Exchange(
        question=str(data.get("question") or ""),
        reply=reply,
        thinking=thinking,
        speaking=speaking,
        finish_reason=data.get("finish_reason"),
        reask_of=data.get("reask_of"),
    )


def _topic(raw: Any) -> str:
    return normalise_topic_id(raw) or (str(raw) if raw else "unknown")


def _charlite_items(data: dict[str, Any], path: Path) -> list[Item]:
    items = []
    for n, raw in enumerate(data.get("items") or []):
        where = f"{path}: item {n + 1}"
        if not isinstance(raw, dict) or "question" not in raw:
            raise DataError(f"{where} has no question")
        if raw.get("exchanges"):
            exchanges = [_exchange(e, where) for e in raw["exchanges"]]
        else:
            exchanges = [_exchange(raw, where)]
        topic_id = _topic(raw.get("topic_id"))
        items.append(
            Item(
                index=int(raw.get("index", n)),
                topic_id=topic_id,
                topic=str(raw.get("topic") or TOPICS.get(topic_id, topic_id)),
                question=str(raw["question"]),
                exchanges=exchanges,
                answer_keywords=list(raw["answer_keywords"])
                if raw.get("answer_keywords")
                else None,
            )
        )
    return items


def _paper_items(data: list[Any], path: Path) -> list[Item]:
    items = []
    for n, raw in enumerate(data):
        where = f"{path}: entry {n + 1}"
        if not isinstance(raw, dict) or "question" not in raw or "reply" not in raw:
            raise DataError(
                f"{where} is not a result entry",
                hint='a paper result file is a JSON list of {"topic_id", "question", "reply": [{"role", "action", "content"}]}',
            )
        topic_id = _topic(raw.get("topic_id"))
        items.append(
            Item(
                index=n,
                topic_id=topic_id,
                topic=str(raw.get("topic") or TOPICS.get(topic_id, topic_id)),
                question=str(raw["question"]),
                exchanges=[_exchange(raw, where)],
            )
        )
    return items


def load_results(path: Path | str) -> Results:
    """Read a charlite results file or a paper single-turn result file."""
    path = Path(path)
    data = _read(path)
    if isinstance(data, dict) and "items" in data and "format" in data:
        if data.get("format") != RESULTS_FORMAT:
            raise DataError(
                f"{path}: results format {data.get('format')!r} is not supported (this charlite reads {RESULTS_FORMAT})",
                hint="upgrade charlite, or rerun the interview",
            )
        items = _charlite_items(data, path)
        character = (data.get("character") or {}).get("slug")
        mode = data.get("mode") or ("multi" if any(i.multi for i in items) else "single")
        model = (
            (data.get("model") or {}).get("label")
            or (data.get("model") or {}).get("spec")
            or "unknown"
        )
        setting = dict(data.get("setting") or {})
        fmt = "charlite"
    elif isinstance(data, list) and (
        not data or (isinstance(data[0], dict) and "reply" in data[0])
    ):
        items = _paper_items(data, path)
        character, mode, model, setting, fmt = None, "single", _paper_model(path), {}, "paper"
    elif isinstance(data, list) and data and isinstance(data[0], dict) and "question" in data[0]:
        raise DataError(
            f"{path} is a question file, not interview results",
            hint="pass it to 'charlite interview NAME --questions FILE'",
        )
    else:
        raise DataError(
            f"{path}: unknown results format",
            hint="use a file written by 'charlite interview' or a paper single-turn result file",
        )
    if not items:
        raise DataError(
            f"{path} holds no replies", hint="run 'charlite interview NAME -o FILE' first"
        )
    return Results(path, fmt, mode, character, items, model, setting)


def _paper_model(path: Path) -> str:
    m = re.match(r"(?:multiturn_)?[A-Za-z]+_(.+?)_result$", path.parent.name)
    return m.group(1) if m else path.stem


# ---------------------------------------------------------------------------------------------
# Which character a paper file is about

_GENERIC = {
    "result",
    "results",
    "single",
    "multi",
    "turn",
    "turns",
    "interview",
    "json",
    "sft",
    "the",
    "and",
}


def _tokens(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z]+", text.lower()) if len(t) >= 3 and t not in _GENERIC]


def infer_character(results: Results, profiles: list) -> str | None:
    """The slug of the character a results file is about, from reply roles then the file name.

    Exact matches on slug, short name or a word of the full name win; close spellings
    ("Hermonie") count when nothing matches exactly. None when no single character fits.
    """
    roles = Counter(
        str(line.get("role") or "")
        for item in results.items
        for e in item.exchanges
        for line in e.reply
    )
    role_tokens = [t for role, _ in roles.most_common(3) for t in _tokens(role)]
    path_tokens = _tokens(results.path.parent.name) + _tokens(results.path.stem)
    for tokens in (role_tokens, path_tokens):
        found = _match(tokens, profiles)
        if found:
            return found
    return None


def _match(tokens: list[str], profiles: list) -> str | None:
    if not tokens:
        return None
    exact: set[str] = set()
    close: set[str] = set()
    for p in profiles:
        names = {p.slug.lower(), p.short_name.lower()} | {w for w in _tokens(p.name) if len(w) >= 4}
        names |= {t for n in list(names) for t in _tokens(n)}
        for t in tokens:
            if t in names:
                exact.add(p.slug)
            elif difflib.get_close_matches(t, list(names), n=1, cutoff=0.85):
                close.add(p.slug)
    if len(exact) == 1:
        return exact.pop()
    if not exact and len(close) == 1:
        return close.pop()
    return None

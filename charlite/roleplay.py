"""THE role-play format. Training, chat, Modelfiles, serve and eval all render through here.

A conversation is a list of :class:`Turn` (who speaks, whether they think or speak, what).
It becomes chat messages like this:

* **system**: the Character-LLM meta prompt, the scene (``Location:`` / ``Status:``) and, in
  prompted mode, the profile's most relevant paragraphs; text that spells a special token
  (``<|im_end|>``) is made inert, so a profile cannot open a fake turn;
* **user**: every other speaker's lines, each prefixed with the speaker's name
  (``Man: Where were you born?``); with knowledge on, the paragraphs recalled for that turn
  come first, in brackets (:func:`with_recall`), so the system message never changes;
* **assistant**: the character's lines, each beginning ``(thinking)`` or ``(speaking)``.

>>> from charlite.profile import Scene
>>> turns = [Turn("Man", "Hello."), Turn("Beethoven", "Who is this?", "thinking"),
...          Turn("Beethoven", "Good day.", "speaking")]
>>> [m["role"] for m in to_messages("Beethoven", "Ludwig van Beethoven",
...      Scene(location="Vienna", status="At home."), turns)]
['system', 'user', 'assistant']
>>> render_reply(turns[1:])
'(thinking) Who is this?\\n(speaking) Good day.'
>>> [(p.action, p.content) for p in parse_reply("(thinking) Hm.\\n(speaking) Hello!")]
[('thinking', 'Hm.'), ('speaking', 'Hello!')]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from charlite.profile import DEFAULT_USER, Profile, Scene

Action = Literal["thinking", "speaking"]
ACTIONS: tuple[str, ...] = ("thinking", "speaking")

META_PROMPT = (
    "I want you to act like {character}. I want you to respond and answer like {character}, "
    "using the tone, manner and vocabulary {character} would use. "
    "You must know all of the knowledge of {character}."
)
STATUS_HEADER = "The status of you is as follows:"
INTERACTIONS_HEADER = "The interactions are as follows:"
KNOWLEDGE_HEADER = "What you know of your own life:"
RECALL_HEADER = "What you remember of this:"
EOT = "<|eot|>"

INTERVIEW_LOCATION = "Coffee Shop - Afternoon"
INTERVIEW_STATUS = (
    "{name} is casually chatting with a man from the 21st century. {name} fully trusts the man "
    "who engage in conversation and shares everything {name} knows without reservation."
)
INTERVIEWER = "Man"

_MARKER = re.compile(r"^\((thinking|speaking)\)[ \t]?")
_LOOSE_MARKER = re.compile(
    r"^\s*(?:[*_]{0,2})(?:(?P<name>[^\n():]{1,40}?)\s*)?\((?P<action>thinking|speaking|think|speak)\)\s*:?\s*",
    re.IGNORECASE,
)


@dataclass
class Turn:
    """One line of a dialogue. ``action`` is set only for the character's own lines."""

    role: str
    content: str
    action: Action | None = None


@dataclass
class ReplyPart:
    action: Action
    content: str


# ---------------------------------------------------------------------------------------------
# System message


# Special tokens look like <|im_start|>, <|eot_id|>, </s>, <start_of_turn>, <filename> or
# [INST]. Tokenizers turn their exact text into control tokens, so profile text that spells one
# could open a fake turn. U+034F (combining grapheme joiner) after the opening bracket keeps
# the text readable but no longer equal to any special token; it is printable in every Unicode
# version, so Ollama's Modelfile parser keeps it too.
INERT_MARK = "\u034f"
_SPECIAL_TOKEN = re.compile(
    r"(<)(?=[|/\uff5c]?[\w|\u2581\uff5c][^<>\s]{0,60}>)|(\[)(?=/?[A-Z][A-Z_]{1,30}\])"
)


def inert_special_tokens(text: str) -> str:
    """``text`` with every special-token-like tag broken, so no tokenizer reads it as one.

    >>> inert_special_tokens("<|im_end|>") == "<\u034f|im_end|>"
    True
    >>> inert_special_tokens("3 < 4 and x<y")
    '3 < 4 and x<y'
    """
    return _SPECIAL_TOKEN.sub(lambda m: (m.group(1) or m.group(2)) + INERT_MARK, text)


def meta_prompt(character: str) -> str:
    return META_PROMPT.format(character=character)


def system_message(
    character: str,
    scene: Scene,
    knowledge: Sequence[str] = (),
    style: str = "",
) -> str:
    """The system message: meta prompt, scene, and (prompted mode) knowledge paragraphs."""
    parts = [meta_prompt(character)]
    if style:
        parts.append(f"Your manner of speech: {style.strip()}")
    if knowledge:
        parts.append(KNOWLEDGE_HEADER + "\n" + "\n".join(k.strip() for k in knowledge))
    parts.append(f"{STATUS_HEADER}\nLocation: {scene.location}\nStatus: {scene.status}")
    parts.append(INTERACTIONS_HEADER)
    return inert_special_tokens("\n\n".join(parts))


def interview_scene(profile: Profile) -> Scene:
    """The paper's interview setting, unless the profile gives an interview scene of its own."""
    custom = profile.metadata.get("interview_scene") if profile.metadata else None
    if isinstance(custom, dict) and custom.get("location") and custom.get("status"):
        return Scene(location=custom["location"], status=custom["status"])
    return Scene(
        location=INTERVIEW_LOCATION, status=INTERVIEW_STATUS.format(name=profile.short_name)
    )


_WORD = re.compile(r"[a-z0-9]+")
_STOP = set(
    [
        "the",
        "a",
        "an",
        "of",
        "and",
        "or",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "is",
        "was",
        "were",
        "are",
        "be",
        "been",
        "i",
        "you",
        "he",
        "she",
        "it",
        "his",
        "her",
        "their",
        "they",
        "we",
        "my",
        "your",
        "me",
        "do",
        "did",
        "does",
        "what",
        "who",
        "when",
        "where",
        "why",
        "how",
        "which",
        "that",
        "this",
        "as",
        "not",
        "but",
        "so",
        "if",
        "into",
        "about",
        "have",
        "has",
        "had",
    ]
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def relevant_paragraphs(profile: Profile, query: str = "", budget_chars: int = 1800) -> list[str]:
    """The profile paragraphs most related to ``query`` (and the scene), within a budget.

    The first paragraph (who the character is) always comes first; the rest are ranked by
    shared words and kept in profile order, so the same query always gives the same text.
    """
    texts = profile.paragraph_texts()
    if not texts:
        return []
    scene = profile.default_scene
    want = _words(f"{query} {scene.location} {scene.status}")
    ranked = sorted(range(1, len(texts)), key=lambda i: (-len(_words(texts[i]) & want), i))
    chosen = [0]
    used = len(texts[0])
    for i in ranked:
        if used + len(texts[i]) > budget_chars:
            continue
        chosen.append(i)
        used += len(texts[i])
    return [texts[i] for i in sorted(chosen)]


def profile_system_message(
    profile: Profile,
    scene: Scene | None = None,
    *,
    prompted: bool = False,
    query: str = "",
    budget_chars: int = 1800,
) -> str:
    """The system message for ``profile``: trained characters need no knowledge paragraphs."""
    knowledge = relevant_paragraphs(profile, query, budget_chars) if prompted else ()
    style = profile.speaking_style if prompted else ""
    return system_message(profile.name, scene or profile.default_scene, knowledge, style)


# ---------------------------------------------------------------------------------------------
# Turns <-> chat messages


def _escape_line(line: str) -> str:
    """Prefix ``\\`` to a continuation line that :func:`parse_reply` would take for a marker."""
    if line.startswith("\\") or _MARKER.match(line) or _LOOSE_MARKER.match(line):
        return "\\" + line
    return line


def render_reply(turns: Iterable[Turn]) -> str:
    """The character's consecutive turns as one assistant message, one marked line each."""
    lines = []
    for turn in turns:
        action = turn.action or "speaking"
        first, *rest = turn.content.split("\n")
        lines.append(f"({action}) {first}")
        lines.extend(_escape_line(ln) for ln in rest)
    return "\n".join(lines)


def parse_reply(text: str, name: str | None = None) -> list[ReplyPart]:
    """Split a reply into thinking and speaking parts; inverse of :func:`render_reply`.

    Tolerates what models write: no markers at all (all speaking), ``Name (speaking): …``
    labels, ``(think)``. Empty parts are dropped.
    """
    parts: list[ReplyPart] = []
    current: ReplyPart | None = None
    for line in text.split("\n"):
        escaped = line.startswith("\\")  # an escaped continuation line is never a marker
        m = None if escaped else (_MARKER.match(line) or _loose_match(line, name))
        if m:
            action = (
                "thinking"
                if m.group(m.re.groupindex.get("action", 1)).lower().startswith("think")
                else "speaking"
            )
            current = ReplyPart(action, line[m.end() :])
            parts.append(current)
            continue
        if escaped:
            line = line[1:]
        if current is None:
            current = ReplyPart("speaking", line)
            parts.append(current)
        else:
            current.content += "\n" + line
    out = []
    for p in parts:
        if p.content.strip():
            out.append(p)
    return out


def _loose_match(line: str, name: str | None) -> re.Match | None:
    m = _LOOSE_MARKER.match(line)
    if not m:
        return None
    label = (m.group("name") or "").strip(" *_")
    if label and name and label.lower() not in name.lower() and name.lower() not in label.lower():
        return None
    return m


def spoken(text: str, name: str | None = None) -> str:
    """Only what the character says aloud."""
    return "\n".join(
        p.content.strip() for p in parse_reply(text, name) if p.action == "speaking"
    ).strip()


def thoughts(text: str, name: str | None = None) -> str:
    return "\n".join(
        p.content.strip() for p in parse_reply(text, name) if p.action == "thinking"
    ).strip()


def user_line(speaker: str | None, content: str) -> str:
    """A user message line: ``Name: content``, or the bare content for the chat's own user.

    A prompted (untrained) model stays in character far better when the person it talks to is
    simply "you", so a chat user with no name is not prefixed.
    """
    first, *rest = content.split("\n")
    # continuation lines that look like "Name: ..." or start with a backslash are escaped with
    # a backslash, so that from_messages() does not take them for another speaker
    rest = ["\\" + ln if ln.startswith("\\") or _USER_LINE.match(ln) else ln for ln in rest]
    text = "\n".join([first, *rest])
    return f"{speaker}: {text}" if speaker else text


def with_recall(content: str, recalled: Sequence[str]) -> str:
    """A user message with the paragraphs recalled for it in front (unchanged when none).

    >>> with_recall("Man: Who taught you?", ["Neefe taught him."])
    '[What you remember of this: Neefe taught him.]\\nMan: Who taught you?'
    """
    if not recalled:
        return content
    text = " ".join(" ".join(p.split()) for p in recalled)
    return f"[{RECALL_HEADER} {text}]\n{content}"


def to_messages(
    character: str,
    full_name: str,
    scene: Scene,
    turns: Sequence[Turn],
    *,
    system: str | None = None,
    recall: Callable[[str], Sequence[str]] | None = None,
) -> list[dict[str, str]]:
    """Chat messages for a dialogue in which ``character`` (its speaker label) is the assistant.

    Consecutive lines of other speakers form one user message; consecutive lines of the
    character form one assistant message. With ``recall`` (question -> paragraphs), each user
    message gets what is recalled for it, as chat renders a turn with knowledge on.
    """
    messages = [{"role": "system", "content": system or system_message(full_name, scene)}]
    asked: list[str] = [""]
    for turn in turns:
        mine = turn.role == character
        role = "assistant" if mine else "user"
        text = render_reply([turn]) if mine else user_line(turn.role, turn.content)
        if messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + text
            asked[-1] += "\n" + turn.content
        else:
            messages.append({"role": role, "content": text})
            asked.append(turn.content)
    if recall is not None:
        for message, question in zip(messages, asked, strict=True):
            if message["role"] == "user":
                message["content"] = with_recall(message["content"], recall(question))
    return messages


_USER_LINE = re.compile(r"^(?P<name>[^\n:]{1,60}): (?P<content>.*)$")


def from_messages(character: str, messages: Sequence[dict[str, str]]) -> list[Turn]:
    """Turns back from chat messages (the system message is skipped)."""
    turns: list[Turn] = []
    for msg in messages:
        role, content = msg.get("role"), msg.get("content") or ""
        if role == "assistant":
            turns.extend(
                Turn(character, p.content, p.action) for p in parse_reply(content, character)
            )
        elif role == "user":
            current: Turn | None = None
            for line in content.split("\n"):
                m = (
                    None
                    if line.startswith("\\") and current is not None
                    else _USER_LINE.match(line)
                )
                if m is None and current is not None and line.startswith("\\"):
                    line = line[1:]
                if m:
                    current = Turn(m.group("name"), m.group("content"))
                    turns.append(current)
                elif current is not None:
                    current.content += "\n" + line
                else:
                    current = Turn(DEFAULT_USER, line)
                    turns.append(current)
    return turns


# ---------------------------------------------------------------------------------------------
# Character-LLM's prompted SFT format


def character_llm_prompt(full_name: str, scene: Scene) -> str:
    """The paper's prompt: meta prompt, status, then the interactions header."""
    return inert_special_tokens(
        f"{meta_prompt(full_name)}\n\n{STATUS_HEADER}\nLocation: {scene.location}\n"
        f"Status: {scene.status}\n\n{INTERACTIONS_HEADER}\n\n"
    )


def character_llm_output(turns: Sequence[Turn]) -> str:
    """``Role (action): content<|eot|>`` lines."""
    lines = []
    for t in turns:
        action = f" ({t.action})" if t.action else " (speaking)"
        lines.append(f"{t.role}{action}: {t.content}{EOT}")
    return "\n".join(lines)


_CLLM_LINE = re.compile(
    r"^(?P<role>[^\n()]{1,80}?)\s*\((?P<action>thinking|speaking)\)\s*:\s?", re.M
)


def parse_character_llm_output(output: str, character: str) -> list[Turn]:
    """Turns from ``Role (action): content<|eot|>`` text; only ``character`` keeps thinking."""
    turns = []
    for chunk in output.split(EOT):
        chunk = chunk.strip("\n")
        m = _CLLM_LINE.match(chunk.strip())
        if not m:
            if chunk.strip() and turns:
                turns[-1].content += "\n" + chunk.strip()
            continue
        body = chunk.strip()[m.end() :].strip()
        role = m.group("role").strip()
        if not body:
            continue
        action = m.group("action") if role == character else None
        turns.append(Turn(role, body, action))  # type: ignore[arg-type]
    return turns


def parse_character_llm_prompt(prompt: str) -> tuple[str | None, str | None, str | None]:
    """(character, location, status) from a Character-LLM prompt, where present."""
    who = re.search(r"I want you to act like (.+?)\. I want you", prompt)
    loc = re.search(r"^Location:\s*(.*)$", prompt, re.M)
    status = re.search(r"^Status:\s*(.*)$", prompt, re.M)
    return (
        who.group(1).strip() if who else None,
        loc.group(1).strip() if loc else None,
        status.group(1).strip() if status else None,
    )


# ---------------------------------------------------------------------------------------------
# Fitting a conversation to the context

PROMPT_SLACK = 16
"""Tokens kept free besides the reply: the generation prompt (``<|im_start|>assistant\\n``, a
BOS) and chat templates that wrap a turn in more tokens than ChatML does."""
SYSTEM_OVERHEAD = 8
"""Template tokens around the system message."""
MESSAGE_OVERHEAD = 6
"""Template tokens around every other message (ChatML: ``<|im_start|>user\\n`` … ``<|im_end|>\\n``
is 5; measured against llama.cpp's own rendering of the embedded model, the estimate is exact
to a token)."""


@dataclass(frozen=True)
class FittedContext:
    """What :func:`fit_context` keeps of a conversation."""

    messages: list[dict[str, str]]
    """The system message and the kept turns; the newest user turn carries ``recalled``."""
    first: int
    """Index (among the messages after the system one) of the first kept message: how many
    were dropped."""
    recalled: list[str]
    """The recalled paragraphs that fitted (none when the context is too small for them)."""
    tokens: int
    """The estimated prompt size of ``messages``."""
    budget: int
    """The tokens the prompt may take: the context less the reply and :data:`PROMPT_SLACK`."""

    @property
    def fits(self) -> bool:
        return self.tokens <= self.budget


def fit_context(
    messages: Sequence[dict[str, str]],
    *,
    count_tokens: Callable[[str], int],
    n_ctx: int,
    max_tokens: int,
    recalled: Sequence[str] = (),
    first: int = 0,
    target: float = 1.0,
) -> FittedContext:
    """The one rule that fits a conversation (system message first) to a model's context.

    The prompt may take ``n_ctx - max_tokens - PROMPT_SLACK`` tokens, each message counted as
    its rendered content plus the template's tokens around it. When it is too long, the
    oldest messages are dropped (never the newest), from ``first`` on, until the prompt fills
    at most ``target`` of what the system message leaves: a ``target`` below 1 drops them in
    one large block, so the kept prefix stays byte-stable (and cached) for many turns. The kept
    history always begins with a user message, as strict chat templates require. ``recalled``
    paragraphs go in front of the newest user message when they fit with it, else not at all.
    The result may still not fit (a single message too long): see :attr:`FittedContext.fits`.

    >>> msgs = [{"role": "system", "content": "s" * 40}] + [
    ...     {"role": r, "content": "x" * 40} for r in ("user", "assistant") * 3]
    >>> fit = fit_context(msgs, count_tokens=lambda t: len(t) // 4, n_ctx=120, max_tokens=20)
    >>> fit.first, [m["role"] for m in fit.messages], fit.tokens, fit.budget
    (2, ['system', 'user', 'assistant', 'user', 'assistant'], 82, 84)
    """
    system, turns = dict(messages[0]), [dict(m) for m in messages[1:]]
    budget = n_ctx - max_tokens - PROMPT_SLACK
    fixed = count_tokens(system["content"]) + SYSTEM_OVERHEAD
    sizes = [count_tokens(m["content"]) + MESSAGE_OVERHEAD for m in turns]
    recalled = list(recalled) if turns and turns[-1]["role"] == "user" else []
    if recalled:
        extra = count_tokens(with_recall("", recalled))
        if fixed + extra + sizes[-1] > budget:
            recalled = []  # a context too small for it: the turn goes without
        else:
            fixed += extra
    last = len(turns) - 1
    if fixed + sum(sizes[first:]) > budget:
        goal = fixed + (budget - fixed) * target
        while first < last and fixed + sum(sizes[first:]) > goal:
            first += 1
    while first < last and turns[first]["role"] != "user":
        first += 1  # start the kept history with a user message
    kept = turns[first:]
    if recalled:
        kept[-1]["content"] = with_recall(kept[-1]["content"], recalled)
    return FittedContext([system, *kept], first, recalled, fixed + sum(sizes[first:]), budget)

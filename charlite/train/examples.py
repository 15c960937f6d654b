"""SFT examples from experiences: chat messages, the tokenizer's template, an assistant-only mask.

Each experience becomes chat messages through :func:`charlite.roleplay.to_messages` (system:
meta prompt and scene; user: other speakers; assistant: the character's ``(thinking)`` and
``(speaking)`` lines). The tokenizer's own chat template renders them, and the loss covers only
the character's tokens, its end-of-turn token included, so the model learns to stop.

Where the assistant text lies is found by rendering prefixes: the conversation up to an
assistant message with the generation prompt, and up to the end of that message. Templates
that rewrite earlier turns (so a prefix is not a prefix) fall back to finding the message text
itself. Characters map to tokens through the fast tokenizer's offsets; a token is trained when
its first character is inside an assistant span.

A dialogue longer than ``max_seq_len`` is split between exchanges (a user message and the
character's answer), each part starting again with the system message.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from charlite import roleplay
from charlite.errors import DataError
from charlite.experience.schemas import Experience
from charlite.knowledge import recall as recall_for
from charlite.profile import Profile

IGNORE = -100
SCENE_START = "(the scene begins)"
"""A user turn put before a part that opens with the character, for templates that need one."""

Message = dict[str, str]


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    """``input_ids`` where the loss applies, :data:`IGNORE` elsewhere."""
    source: str = ""

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class ExampleSet:
    examples: list[Example]
    stats: Counter = field(default_factory=Counter)

    def token_counts(self) -> dict[str, int]:
        return {
            "examples": len(self.examples),
            "tokens": sum(len(e) for e in self.examples),
            "trained_tokens": sum(e.trained_tokens for e in self.examples),
            "longest": max((len(e) for e in self.examples), default=0),
            **{k: v for k, v in sorted(self.stats.items())},
        }


# ---------------------------------------------------------------------------------------------
# Messages


def experience_messages(
    profile: Profile, experience: Experience, knowledge: bool = False
) -> list[Message]:
    """An experience as chat messages, through the role-play format; with ``knowledge``, each
    question carries the profile paragraphs recalled for it, as in a chat with knowledge on."""
    recall = None
    if knowledge:

        def recall(question: str) -> list[str]:
            return recall_for(profile, question)

    return roleplay.to_messages(
        profile.short_name, profile.name, experience.scene(), experience.turns(), recall=recall
    )


def with_knowledge(record_id: str, share: float) -> bool:
    """Whether a record is rendered with recalled paragraphs: a fixed choice per record id, so
    that about ``share`` of the records are, the same ones on every run.

    >>> with_knowledge("x", 0.0), with_knowledge("x", 1.0)
    (False, True)
    """
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def render(tokenizer: Any, messages: Sequence[Message], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )


# ---------------------------------------------------------------------------------------------
# Assistant spans and the mask


def _end_of_turn(tokenizer: Any) -> list[str]:
    marks = [getattr(tokenizer, "eos_token", None)]
    for name in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>"):
        marks.append(name)
    return [m for m in marks if m]


def assistant_spans(
    tokenizer: Any, messages: Sequence[Message]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character ranges of each assistant message.

    A span runs from the first character the model must write (after the generation prompt)
    to the end of the assistant's end-of-turn marker; whitespace after the marker is not
    trained.
    """
    full = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = end = -1
        try:
            before = render(tokenizer, messages[:i], generation_prompt=True)
            upto = render(tokenizer, messages[: i + 1])
        except Exception:  # some templates refuse a conversation ending with a given role
            before = upto = None
        if (
            before is not None
            and upto is not None
            and full.startswith(before)
            and full.startswith(upto)
            and cursor <= len(before) < len(upto)
        ):
            start, end = len(before), len(upto)
        else:
            start = full.find(message["content"], cursor)
            if start < 0:
                raise DataError(
                    "the chat template does not reproduce an assistant message verbatim; "
                    "cannot tell which tokens to train"
                )
            end = start + len(message["content"])
            rest = full[end:]
            for mark in _end_of_turn(tokenizer):
                stripped = rest.lstrip(" ")
                if stripped.startswith(mark):
                    end += len(rest) - len(stripped) + len(mark)
                    break
        while end > start and full[end - 1] in " \t\r\n":
            end -= 1
        spans.append((start, end))
        cursor = end
    return full, spans


def tokenize_with_mask(tokenizer: Any, messages: Sequence[Message]) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and, per token, whether the loss covers it."""
    full, spans = assistant_spans(tokenizer, messages)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask: list[bool] = []
        for begin, finish in enc["offset_mapping"]:
            if finish <= begin and mask:  # a token with no text of its own follows its neighbour
                mask.append(mask[-1])
                continue
            mask.append(any(s <= begin < e for s, e in spans))
        return ids, mask
    # slow tokenizers have no offsets: tokenize the pieces between span edges one by one
    ids, mask = [], []
    edges = sorted({0, len(full), *[x for span in spans for x in span]})
    for a, b in zip(edges, edges[1:], strict=False):
        piece = tokenizer(full[a:b], add_special_tokens=False)["input_ids"]
        inside = any(s <= a < e for s, e in spans)
        ids.extend(piece)
        mask.extend([inside] * len(piece))
    return ids, mask


# ---------------------------------------------------------------------------------------------
# Splitting long dialogues


def exchanges(messages: Sequence[Message]) -> tuple[Message, list[list[Message]]]:
    """The system message and the exchanges: [user, assistant] pairs (or a lone assistant).

    A user message nobody answers (at the end) is dropped: it has nothing to train.
    """
    if not messages or messages[0]["role"] != "system":
        raise DataError("a training conversation must begin with a system message")
    system, rest = messages[0], list(messages[1:])
    out: list[list[Message]] = []
    pending: list[Message] = []
    for message in rest:
        if message["role"] == "assistant":
            out.append([*pending, message])
            pending = []
        else:
            pending = [message] if not pending else [_join(pending[0], message)]
    return system, out


def _join(a: Message, b: Message) -> Message:
    return {"role": a["role"], "content": a["content"] + "\n" + b["content"]}


def _conversation(tokenizer: Any, system: Message, parts: Iterable[list[Message]]) -> list[Message]:
    messages = [system, *[m for part in parts for m in part]]
    if len(messages) > 1 and messages[1]["role"] == "assistant":
        try:
            render(tokenizer, messages)
        except Exception:  # a template that insists on a user turn first
            messages.insert(1, {"role": "user", "content": SCENE_START})
    return messages


def split_conversation(
    tokenizer: Any, messages: Sequence[Message], max_len: int, stats: Counter | None = None
) -> list[tuple[list[int], list[bool]]]:
    """Tokenized parts of a conversation, each at most ``max_len`` tokens.

    Parts break between exchanges and repeat the system message. An exchange that alone is
    too long loses the start of its question (``shortened``), then the end of its answer
    (``truncated``).
    """
    stats = stats if stats is not None else Counter()
    system, parts = exchanges(messages)
    out: list[tuple[list[int], list[bool]]] = []
    current: list[list[Message]] = []
    current_tok: tuple[list[int], list[bool]] | None = None
    for part in parts:
        trial = tokenize_with_mask(tokenizer, _conversation(tokenizer, system, [*current, part]))
        if len(trial[0]) <= max_len:
            current, current_tok = [*current, part], trial
            continue
        if current_tok is not None:
            out.append(current_tok)
            stats["split"] += 1
        alone = tokenize_with_mask(tokenizer, _conversation(tokenizer, system, [part]))
        if len(alone[0]) <= max_len:
            current, current_tok = [part], alone
            continue
        fitted = _fit_exchange(tokenizer, system, part, alone, max_len, stats)
        if fitted is not None:
            out.append(fitted)
        current, current_tok = [], None
    if current_tok is not None:
        out.append(current_tok)
    return out


_SPEAKER = re.compile(r"^[^\n:]{1,60}: ")


def _fit_exchange(
    tokenizer: Any,
    system: Message,
    part: list[Message],
    tokenized: tuple[list[int], list[bool]],
    max_len: int,
    stats: Counter,
) -> tuple[list[int], list[bool]] | None:
    """One exchange longer than ``max_len``: keep the end of the question (what the answer
    follows), then, if the answer alone is still too long, cut it at ``max_len``."""
    ids, mask = tokenized
    if part[0]["role"] == "user":
        content = part[0]["content"]
        speaker = _SPEAKER.match(content)
        head = speaker.group(0) if speaker else ""
        body = tokenizer(content[len(head) :], add_special_tokens=False)["input_ids"]
        keep = max(0, len(body) - (len(ids) - max_len) - 8)
        tail = tokenizer.decode(body[len(body) - keep :]) if keep else ""
        shorter = [{"role": "user", "content": f"{head}…{tail}"}, *part[1:]]
        ids, mask = tokenize_with_mask(tokenizer, _conversation(tokenizer, system, [shorter]))
        stats["shortened"] += 1
    if len(ids) > max_len:
        ids, mask = ids[:max_len], mask[:max_len]
        stats["truncated"] += 1
    return (ids, mask) if any(mask) else None


# ---------------------------------------------------------------------------------------------
# Building the example set


def build_examples(
    tokenizer: Any,
    profile: Profile,
    records: Sequence[Experience],
    max_seq_len: int,
    knowledge_share: float = 0.0,
) -> ExampleSet:
    """Every trainable part of every record, as token ids and labels."""
    stats: Counter = Counter()
    examples: list[Example] = []
    for record in records:
        knowledge = with_knowledge(record.id, knowledge_share)
        stats["with_knowledge"] += knowledge
        messages = experience_messages(profile, record, knowledge)
        for n, (ids, mask) in enumerate(
            split_conversation(tokenizer, messages, max_seq_len, stats)
        ):
            if not any(mask):
                stats["no_trained_tokens"] += 1
                continue
            labels = [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]
            examples.append(Example(ids, labels, f"{record.id}#{n}"))
    return ExampleSet(examples, stats)

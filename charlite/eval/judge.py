"""The LLM judge: one score from 1 to 7 per reply and dimension, in constrained JSON.

The judge sees the character's profile, the setting, the interaction, the criterion and its
evaluation steps; it answers ``{"reasoning": "...", "score": N}``. A reply that is not that
(cut off at the token limit, not JSON, no score, a score outside 1–7) is asked again with a
new seed, a bounded number of times, and then recorded as *unscored*: never a number.

>>> parse_judgement('{"reasoning": "Accurate.", "score": 6}')
('Accurate.', 6)
>>> parse_judgement('{"reasoning": "x", "score": 9}')
Traceback (most recent call last):
...
charlite.eval.judge.JudgeOutputError: score 9 is outside 1-7
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from charlite.backends.base import Backend, GenParams
from charlite.errors import BackendError, PromptTooLongError, RequestError
from charlite.roleplay import relevant_paragraphs

SINGLE_DIMENSIONS = ("memorization", "values", "personality", "hallucination")
MULTI_DIMENSIONS = SINGLE_DIMENSIONS + ("stability",)
SCORE_MIN, SCORE_MAX = 1, 7
JUDGE_PARAMS = GenParams(temperature=0.2, top_p=0.95, max_tokens=320, repeat_penalty=1.1)
DEFAULT_ATTEMPTS = 3
REASONING_CHARS = 500


@dataclass(frozen=True)
class Criterion:
    name: str
    title: str
    description: str
    steps: tuple[str, ...]


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in [
        Criterion(
            "memorization",
            "Memorization",
            "Is what the character says about themselves correct? Judge the people, places, dates, "
            "works and events of their life against the profile and well-known facts. Specific, "
            "accurate detail is good; wrong facts, confusion with other people and vagueness about "
            "things the character knows well are bad.",
            (
                "Note what the profile says that bears on the question.",
                "Compare every factual claim in the replies with the profile and with well-known facts about the character.",
                "Weigh correct specific details against wrong facts and evasions about things the character would know.",
                "Score 1 if the facts are mostly wrong or absent, 4 if mixed or vague, 7 if accurate, specific and complete.",
            ),
        ),
        Criterion(
            "values",
            "Values",
            "Do the replies show the character's own values, beliefs and preferences: what they "
            "care about, approve of and condemn, their goals and convictions, as the profile and "
            "history describe them?",
            (
                "Note the values, beliefs and preferences the profile gives the character.",
                "Find the opinions and judgements expressed in the replies.",
                "Check whether they agree with the character's, or are generic, modern or contradictory.",
                "Score 1 if the values are foreign to the character, 4 if generic, 7 if unmistakably the character's own.",
            ),
        ),
        Criterion(
            "personality",
            "Personality",
            "Do the replies sound like the character: temperament, manner, tone and vocabulary, "
            "the way this person would speak (see the speaking style and traits)?",
            (
                "Note the traits and speaking style of the character.",
                "Read the replies for tone, word choice, mood and manner.",
                "Check whether they show those traits or read like a bland, polite assistant.",
                "Score 1 if nothing of the character's personality shows, 4 if some, 7 if it is vivid and consistent.",
            ),
        ),
        Criterion(
            "hallucination",
            "Hallucination",
            "Do the replies avoid knowledge the character could not have: things after their "
            "time or outside their world? Asked about such things, the character should react as "
            "they would (puzzled, curious, dismissive) instead of supplying modern knowledge.",
            (
                "Note the character's era and the last year they can know about.",
                "Find anything in the replies that the character could not know: later inventions, events, people, words.",
                "Check how the character handles questions about such things: in character, or by explaining them.",
                "Score 1 if the replies freely use knowledge the character cannot have, 7 if they never do.",
            ),
        ),
        Criterion(
            "stability",
            "Stability",
            "Over the whole interview, does the character stay the same person: the same facts "
            "and opinions when asked again, the same voice, never dropping the role or turning "
            "into an assistant or another person?",
            (
                "Follow the interview from start to end.",
                "Note any change of identity, voice or opinion, and compare answers to repeated questions.",
                "Note any moment the character steps out of the role.",
                "Score 1 if the character falls apart, 4 if it drifts, 7 if it holds steady to the end.",
            ),
        ),
    ]
}

SYSTEM = (
    "You are a strict, fair judge of role-play. A model plays a character; you rate one aspect "
    "of its replies. Think step by step, then give an integer score from 1 (worst) to 7 (best). "
    'Answer only with JSON: {"reasoning": "...", "score": N}.'
)


class JudgeOutputError(ValueError):
    """The judge's reply could not be read as a judgement."""


def judge_schema(reasoning_chars: int = REASONING_CHARS) -> dict[str, Any]:
    """The constrained output: bounded reasoning, then a score that can only be 1–7."""
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": reasoning_chars},
            "score": {"type": "integer", "enum": list(range(SCORE_MIN, SCORE_MAX + 1))},
        },
        "required": ["reasoning", "score"],
        "additionalProperties": False,
    }


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def parse_judgement(text: str, finish_reason: str | None = None) -> tuple[str, int]:
    """(reasoning, score) from the judge's reply, or :class:`JudgeOutputError` saying why not."""
    if finish_reason == "length":
        raise JudgeOutputError("cut off at the token limit")
    body = _FENCE.sub("", (text or "").strip())
    if not body:
        raise JudgeOutputError("empty reply")
    try:
        data = json.loads(body, strict=False)  # raw newlines inside strings are fine
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise JudgeOutputError("not JSON") from None
        try:
            data = json.loads(body[start : end + 1], strict=False)
        except json.JSONDecodeError:
            raise JudgeOutputError("not JSON") from None
    if not isinstance(data, dict):
        raise JudgeOutputError("not a JSON object")
    if "score" not in data:
        raise JudgeOutputError("no score")
    score = data["score"]
    if isinstance(score, bool):
        raise JudgeOutputError(f"score {score!r} is not an integer")
    if isinstance(score, str) and re.fullmatch(r"\s*\d+(?:\.0+)?\s*", score):
        score = float(score)
    if isinstance(score, float):
        if not score.is_integer():
            raise JudgeOutputError(f"score {score} is not an integer")
        score = int(score)
    if not isinstance(score, int):
        raise JudgeOutputError(f"score {score!r} is not an integer")
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise JudgeOutputError(f"score {score} is outside {SCORE_MIN}-{SCORE_MAX}")
    reasoning = data.get("reasoning", "")
    if not isinstance(reasoning, str):
        reasoning = json.dumps(reasoning, ensure_ascii=False)
    return reasoning.strip(), score


@dataclass
class Judgement:
    dimension: str
    score: int | None
    reasoning: str = ""
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    raw: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "scored" if self.score is not None else "unscored"


# ---------------------------------------------------------------------------------------------
# The prompt


def character_block(profile, paragraphs: list[str]) -> str:
    lines = [f"Name: {profile.name}"]
    if profile.era and profile.era != "unknown":
        lines.append(f"Era: {profile.era}")
    if profile.knowledge_cutoff is not None:
        year = profile.knowledge_cutoff
        lines.append(f"Knows nothing after: {abs(year)} {'BC' if year < 0 else 'AD'}")
    if profile.traits:
        lines.append("Traits: " + ", ".join(profile.traits))
    if profile.speaking_style:
        lines.append(f"Speaking style: {profile.speaking_style}")
    if paragraphs:
        lines.append("Profile:\n" + "\n".join(paragraphs))
    return "\n".join(lines)


def judge_prompt(
    profile,
    setting: dict[str, str],
    interaction: list[str],
    criterion: Criterion,
    paragraphs: list[str],
) -> str:
    steps = "\n".join(f"{i}. {s}" for i, s in enumerate(criterion.steps, 1))
    return (
        f"# Character\n{character_block(profile, paragraphs)}\n\n"
        f"# Setting\nLocation: {setting.get('location', '')}\nStatus: {setting.get('status', '')}\n\n"
        f"# Interaction\n" + "\n".join(interaction) + "\n\n"
        f"# Criterion: {criterion.title}\n{criterion.description}\n\n"
        f"# Evaluation steps\n{steps}\n\n"
        f'Rate only {criterion.title}. Reason briefly in "reasoning", then give "score" '
        f"({SCORE_MIN}-{SCORE_MAX})."
    )


def _clip_interaction(lines: list[str], max_chars: int) -> list[str]:
    """Keep the start and the end of a long interview, marking what was left out."""
    if sum(len(ln) + 1 for ln in lines) <= max_chars:
        return lines
    clipped = [ln if len(ln) <= max_chars // 4 else ln[: max_chars // 4] + " […]" for ln in lines]
    head, tail = [], []
    used = 0
    i, j = 0, len(clipped) - 1
    while i <= j:
        for side in ("head", "tail"):
            if i > j:
                break
            line = clipped[i] if side == "head" else clipped[j]
            if used + len(line) + 1 > max_chars:
                i = j + 1
                break
            used += len(line) + 1
            if side == "head":
                head.append(line)
                i += 1
            else:
                tail.insert(0, line)
                j -= 1
    left_out = len(lines) - len(head) - len(tail)
    return head + ([f"[… {left_out} lines left out …]"] if left_out else []) + tail


class Judge:
    """Scores replies with a backend; bad outputs are retried, then recorded as unscored."""

    def __init__(
        self,
        backend: Backend,
        *,
        params: GenParams = JUDGE_PARAMS,
        attempts: int = DEFAULT_ATTEMPTS,
        reasoning_chars: int | None = None,
        seed: int = 0,
    ):
        self.backend = backend
        self.params = params
        self.attempts = max(1, attempts)
        if reasoning_chars is None:  # leave the score room within max_tokens (~3 chars a token)
            reasoning_chars = max(40, min(REASONING_CHARS, (params.max_tokens - 24) * 2))
        self.reasoning_chars = reasoning_chars
        self.seed = seed
        self.schema = judge_schema(reasoning_chars)

    @property
    def spec(self) -> str:
        return str(self.backend.spec)

    def messages(
        self, profile, setting: dict[str, str], interaction: list[str], dimension: str
    ) -> list[dict[str, str]]:
        """The judge's prompt, shrunk to fit the judge's context window."""
        criterion = CRITERIA[dimension]
        n_ctx = self.backend.n_ctx or 4096
        budget = n_ctx - self.params.max_tokens - 48
        query = " ".join(interaction)[:2000]
        chars_for_profile, chars_for_interaction = 2400, 2400
        for _ in range(8):
            paragraphs = (
                relevant_paragraphs(profile, query, chars_for_profile)
                if chars_for_profile >= 200
                else []
            )
            lines = _clip_interaction(interaction, chars_for_interaction)
            msgs = [
                {"role": "system", "content": SYSTEM},
                {
                    "role": "user",
                    "content": judge_prompt(profile, setting, lines, criterion, paragraphs),
                },
            ]
            used = sum(self.backend.count_tokens(m["content"]) + 8 for m in msgs)
            if used <= budget:
                return msgs
            chars_for_profile = chars_for_profile // 2
            chars_for_interaction = max(400, int(chars_for_interaction * 0.7))
        return msgs

    def judge(
        self,
        profile,
        setting: dict[str, str],
        interaction: list[str],
        dimension: str,
        *,
        seed_offset: int = 0,
    ) -> Judgement:
        """One judgement. :class:`BackendError` (judge unreachable) is raised, not retried; any
        other failed request (:class:`RequestError`) is one failed attempt."""
        messages = self.messages(profile, setting, interaction, dimension)
        result = Judgement(dimension, None)
        start = time.perf_counter()
        for attempt in range(self.attempts):
            params = self.params.with_(
                seed=self.seed + seed_offset * 31 + attempt,
                temperature=min(1.0, self.params.temperature + 0.3 * attempt),
            )
            result.attempts = attempt + 1
            try:
                completion = self.backend.complete(messages, params, schema=self.schema)
            except BackendError:
                raise
            except PromptTooLongError as exc:  # another seed cannot make the prompt fit
                result.errors.append(f"backend: {exc}"[:200])
                break
            except RequestError as exc:  # a local model that fails this prompt
                result.errors.append(f"backend: {exc}"[:200])
                continue
            result.raw = completion.text[:1000]
            try:
                reasoning, score = parse_judgement(completion.text, completion.finish_reason)
            except JudgeOutputError as exc:
                result.errors.append(str(exc))
                continue
            result.reasoning, result.score = reasoning[: self.reasoning_chars * 2], score
            break
        result.seconds = round(time.perf_counter() - start, 3)
        return result

"""Interviews: a character answers a question set, one question per conversation or many turns.

* **Single-turn**: each question in a fresh conversation, in the paper's interview setting
  (a coffee shop; a trusted visitor from the 21st century) unless the profile gives its own.
  A reply that is only thinking is fed back and the character continues, up to
  :data:`MAX_CONTINUATIONS` times, until it speaks.
* **Multi-turn**: an :class:`Interviewer` opens with a question of the set and asks ``turns``
  follow-ups. It never names the character, digs into memory, values and personality, and
  every :data:`REASK_EVERY` follow-ups asks an earlier question again to test consistency.

Everything renders through :mod:`charlite.roleplay`. The results file (see
:mod:`charlite.eval.results`) is rewritten atomically after every answer, so an interrupted
interview keeps what it has and the same command continues it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from charlite import roleplay
from charlite.backends.base import Backend, GenParams
from charlite.backends.batching import concurrency, ordered_map
from charlite.errors import DataError
from charlite.eval.question_bank import FACTS_TOPIC, Question
from charlite.eval.results import RESULTS_FORMAT, RESULTS_KIND, reply_list
from charlite.files import read_json, write_json_atomic
from charlite.home import CharacterPaths
from charlite.knowledge import paragraphs_in, recall
from charlite.profile import Profile, Scene

INTERVIEW_PARAMS = GenParams(temperature=0.7, top_p=0.95, max_tokens=200, repeat_penalty=1.15)
INTERVIEWER_PARAMS = GenParams(temperature=0.8, top_p=0.95, max_tokens=60, repeat_penalty=1.2)
MAX_CONTINUATIONS = 2
"""How many times a reply that is only thinking (or nothing) is continued before giving up."""
REASK_EVERY = 3
"""Every this many follow-ups, the interviewer asks an earlier question again."""

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------
# One answer


@dataclass
class Answer:
    """The character's reply to the last question, possibly over several generations."""

    parts: list[roleplay.ReplyPart] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    continuations: int = 0
    finish_reason: str | None = None
    cut_other_speaker: bool = False
    seconds: float = 0.0
    tokens: int = 0

    @property
    def thinking(self) -> str:
        return "\n".join(p.content.strip() for p in self.parts if p.action == "thinking").strip()

    @property
    def speaking(self) -> str:
        return "\n".join(p.content.strip() for p in self.parts if p.action == "speaking").strip()


def _other_speaker_rx(others: list[str]) -> re.Pattern[str]:
    names = "|".join(re.escape(o) for o in others if o)
    return re.compile(
        rf"^\s*[*_]{{0,2}}(?:{names})\s*(?:\((?:thinking|speaking)\))?\s*:",
        re.IGNORECASE | re.MULTILINE,
    )


def cut_other_speakers(text: str, others: list[str]) -> tuple[str, bool]:
    """Cut a reply where the model starts writing another speaker's line (``Man: …``)."""
    m = _other_speaker_rx(others).search(text)
    if not m:
        return text, False
    return text[: m.start()].rstrip(), True


def fit_turns(
    backend: Backend, system: str, turns: list[roleplay.Turn], max_tokens: int
) -> list[roleplay.Turn]:
    """Drop the oldest exchanges until the prompt leaves room for the reply.

    The last question always stays; exchanges are dropped whole (a question with its reply).
    The rule is :func:`charlite.roleplay.fit_context`, over the messages the turns render to.
    """
    character = next((t.role for t in turns if t.action is not None), None)
    # the turn each rendered message starts with (to_messages joins a speaker's turns in a row)
    starts = [
        i
        for i, t in enumerate(turns)
        if i == 0 or (t.role == character) != (turns[i - 1].role == character)
    ]
    scene = Scene(location=roleplay.INTERVIEW_LOCATION, status="unused: the system is given")
    messages = roleplay.to_messages(character or "", "", scene, turns, system=system)
    fitted = roleplay.fit_context(
        messages, count_tokens=backend.count_tokens, n_ctx=backend.n_ctx, max_tokens=max_tokens
    )
    return turns[starts[fitted.first] :] if turns else []


def answer(
    backend: Backend,
    profile: Profile,
    scene: Scene,
    turns: list[roleplay.Turn],
    *,
    system: str,
    params: GenParams = INTERVIEW_PARAMS,
    interviewer: str = roleplay.INTERVIEWER,
    max_continuations: int = MAX_CONTINUATIONS,
    knowledge: bool = False,
) -> Answer:
    """Ask for the character's reply to ``turns`` (the last one a question).

    When the reply has no speaking part, its thinking is fed back as the character's turn and
    the model continues; an empty reply is asked again with another seed. With ``knowledge``,
    the profile paragraphs recalled for the question come in its turn, as in ``charlite chat``.
    """
    name = profile.short_name
    result = Answer()
    context = list(turns)
    recalled: list[str] = []
    if knowledge and context and context[-1].role != name:
        recalled = recall(profile, context[-1].content, exclude=paragraphs_in(profile, system))
    start = time.perf_counter()
    for attempt in range(max_continuations + 1):
        fitted = roleplay.fit_context(
            roleplay.to_messages(name, profile.name, scene, context, system=system),
            count_tokens=backend.count_tokens,
            n_ctx=backend.n_ctx,
            max_tokens=params.max_tokens,
            recalled=recalled,
        )
        seed = None if params.seed is None else params.seed + attempt
        completion = backend.complete(fitted.messages, params.with_(seed=seed))
        result.raw.append(completion.text)
        result.finish_reason = completion.finish_reason
        result.tokens += completion.completion_tokens or 0
        text, cut = cut_other_speakers(completion.text, [interviewer])
        result.cut_other_speaker = result.cut_other_speaker or cut
        parts = roleplay.parse_reply(text.strip(), name)
        result.parts.extend(parts)
        if any(p.action == "speaking" for p in parts):
            break
        if attempt == max_continuations:
            break
        result.continuations += 1
        for p in parts:  # only thinking so far: it becomes part of the conversation
            context.append(roleplay.Turn(name, p.content.strip(), "thinking"))
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _answer_record(profile: Profile, ans: Answer) -> dict[str, Any]:
    return {
        "reply": reply_list(profile.short_name, ans.parts),
        "thinking": ans.thinking,
        "speaking": ans.speaking,
        "continuations": ans.continuations,
        "finish_reason": ans.finish_reason,
        "cut_other_speaker": ans.cut_other_speaker,
        "tokens": ans.tokens,
        "seconds": ans.seconds,
    }


# ---------------------------------------------------------------------------------------------
# The interviewer of multi-turn interviews

INTERVIEWER_SYSTEM = (
    "You are a curious journalist from the 21st century. In a coffee shop you are interviewing "
    "a person who trusts you. Ask exactly one short follow-up question (one sentence ending "
    "with '?') that digs into their memories, the people in their life, their values or their "
    "personality, building on what they just said. Never say their name: call them 'you'. "
    "Write only the question."
)
_PREFIX = re.compile(
    r"^\s*(?:[*_\"'`]+)?(?:man|interviewer|journalist|me|you|q|question|next question)\s*(?:\((?:speaking|thinking)\))?\s*[:\-]\s*",
    re.IGNORECASE,
)


class Interviewer:
    """Asks the follow-ups of a multi-turn interview."""

    def __init__(
        self,
        backend: Backend,
        profile: Profile,
        pool: list[Question],
        *,
        params: GenParams = INTERVIEWER_PARAMS,
        reask_every: int = REASK_EVERY,
    ):
        self.backend = backend
        self.profile = profile
        self.pool = [q for q in pool if q.topic_id in ("topic-1", "topic-2", "topic-3")] or list(
            pool
        )
        self.params = params
        self.reask_every = reask_every
        words = {profile.name, profile.short_name, profile.slug}
        words |= {w for w in re.findall(r"[A-Za-z]+", profile.name) if len(w) >= 4}
        self._names = re.compile(
            r"\b(?:"
            + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True) if w)
            + r")\b(?:'s)?",
            re.IGNORECASE,
        )

    def anonymise(self, text: str) -> str:
        """Replace the character's names with "you"."""
        return re.sub(r"\s{2,}", " ", self._names.sub("you", text)).strip()

    def clean(self, text: str) -> str:
        """The question in what the interviewer model wrote, or "" when there is none."""
        for line in text.split("\n"):
            line = roleplay.spoken(line) or line
            line = _PREFIX.sub("", line).strip().strip("\"'`*_ ")
            if not line:
                continue
            if "?" in line:
                line = line[: line.index("?") + 1]
            line = self.anonymise(line)
            if len(re.findall(r"[A-Za-z]", line)) >= 8:
                return line[:300]
        return ""

    def next_question(
        self, exchanges: list[dict[str, Any]], topic: str, step: int, seed: int | None
    ) -> dict[str, Any]:
        """The next question: ``{"question", "source": "model"|"reask"|"fallback", "reask_of"}``."""
        asked = [e["question"] for e in exchanges]
        if self.reask_every and (step + 1) % self.reask_every == 0 and len(exchanges) >= 2:
            reasked = {e.get("reask_of") for e in exchanges}
            for i, e in enumerate(exchanges[:-1]):
                if e.get("reask_of") is None and i not in reasked:
                    return {"question": e["question"], "source": "reask", "reask_of": i}
        transcript = []
        for e in exchanges[-4:]:
            transcript.append(f"You: {e['question']}")
            said = e.get("speaking") or "(no answer)"
            transcript.append(f"They: {self.anonymise(said)[:400]}")
        prompt = (
            "The interview so far:\n" + "\n".join(transcript) + f"\n\nTopic: {topic}.\n"
            "Your next question:"
        )
        messages = [
            {"role": "system", "content": INTERVIEWER_SYSTEM},
            {"role": "user", "content": prompt},
        ]
        completion = self.backend.complete(messages, self.params.with_(seed=seed))
        question = self.clean(completion.text)
        if question and question.lower() not in {a.lower() for a in asked}:
            return {"question": question, "source": "model", "reask_of": None}
        for q in self.pool:  # the model gave nothing usable: a question of the set not yet asked
            if q.question not in asked:
                return {"question": q.question, "source": "fallback", "reask_of": None}
        return {"question": "Tell me more about that?", "source": "fallback", "reask_of": None}


# ---------------------------------------------------------------------------------------------
# The results file


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_output(slug: str, turns: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    mode = f"multi{turns}" if turns else "single"
    return CharacterPaths.of(slug).root / "interviews" / f"{stamp}-{mode}.json"


def artifact_of(resolved, backend: Backend) -> dict[str, Any]:
    """What was actually interviewed: an export, a run's adapter, or a base model."""
    trained_ollama = resolved.spec.kind == "ollama" and resolved.spec.name.startswith("charlite-")
    local_export = resolved.lora is not None or (
        resolved.path is not None and not resolved.prompted
    )
    kind = "export" if trained_ollama or local_export else "base"
    path = resolved.path
    if path is None and resolved.spec.kind in ("embedded", "gguf"):
        try:
            path = resolved.spec.gguf_path()
        except Exception:  # noqa: BLE001 - informational only
            path = None
    return {
        "kind": kind,
        "describe": backend.describe(),
        "path": str(path) if path else None,
        "lora": str(resolved.lora) if resolved.lora else None,
    }


@dataclass
class InterviewPlan:
    """What one interview asks and how."""

    profile: Profile
    questions: list[Question]
    questions_source: str
    turns: int = 0
    limit: int | None = None
    params: GenParams = INTERVIEW_PARAMS
    scene: Scene | None = None

    @property
    def mode(self) -> str:
        return "multi" if self.turns else "single"

    def planned(self) -> list[int]:
        """Indices of the questions to ask now: with ``limit``, the first N of the set (and the
        first N fact probes)."""
        if self.limit is None:
            return list(range(len(self.questions)))
        out, counts = [], {"set": 0, "facts": 0}
        for i, q in enumerate(self.questions):
            kind = "facts" if q.topic_id == FACTS_TOPIC else "set"
            if counts[kind] < self.limit:
                out.append(i)
                counts[kind] += 1
        return out


def new_results(
    plan: InterviewPlan, model: dict[str, Any], interviewer: dict[str, Any] | None
) -> dict[str, Any]:
    p = plan.profile
    scene = plan.scene or roleplay.interview_scene(p)
    params = plan.params
    return {
        "format": RESULTS_FORMAT,
        "kind": RESULTS_KIND,
        "mode": plan.mode,
        "turns": plan.turns,
        "character": {
            "slug": p.slug,
            "name": p.name,
            "short_name": p.short_name,
            "profile_digest": p.digest(),
        },
        "model": model,
        "interviewer": interviewer,
        "setting": {
            "location": scene.location,
            "status": scene.status,
            "interviewer": roleplay.INTERVIEWER,
        },
        "params": {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "repeat_penalty": params.repeat_penalty,
            "seed": params.seed,
            "max_continuations": MAX_CONTINUATIONS,
        },
        "questions_source": plan.questions_source,
        "questions": [q.to_json() for q in plan.questions],
        "items": [],
        "timings": {
            "started_at": now_iso(),
            "updated_at": None,
            "answers": 0,
            "total_seconds": 0.0,
            "mean_seconds": None,
        },
        "complete": False,
    }


def open_results(
    path: Path, plan: InterviewPlan, model: dict[str, Any], interviewer: dict[str, Any] | None
) -> dict[str, Any]:
    """The results file to continue, or a new one; refuse to mix different interviews."""
    if not path.exists():
        return new_results(plan, model, interviewer)
    data = read_json(path)
    hint = "choose another file with -o, or delete it to start over"
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND or "items" not in data:
        raise DataError(f"{path} exists and is not a charlite interview results file", hint=hint)
    if data.get("format") != RESULTS_FORMAT:
        raise DataError(
            f"{path}: results format {data.get('format')!r} cannot be continued", hint=hint
        )
    was = (data.get("character") or {}).get("slug")
    if was != plan.profile.slug:
        raise DataError(f"{path} is an interview of '{was}', not '{plan.profile.slug}'", hint=hint)
    if data.get("mode") != plan.mode or int(data.get("turns") or 0) != plan.turns:
        raise DataError(
            f"{path} is a {data.get('mode')} interview with {data.get('turns')} turns, not this one",
            hint=hint,
        )
    old_model = data.get("model") or {}
    if old_model.get("spec") != model["spec"] or bool(old_model.get("prompted")) != bool(
        model["prompted"]
    ):
        raise DataError(
            f"{path} was started with model {old_model.get('label') or old_model.get('spec')}, not {model['label']}",
            hint=hint,
        )
    old_questions = [q.get("question") for q in data.get("questions") or []]
    if old_questions != [q.question for q in plan.questions]:
        raise DataError(f"{path} was started with a different question list", hint=hint)
    return data


def _save(path: Path, data: dict[str, Any], planned_total: int) -> None:
    items = sorted(data["items"], key=lambda it: it["index"])
    data["items"] = items
    secs = [float(it.get("seconds") or 0.0) for it in items]
    data["timings"].update(
        updated_at=now_iso(),
        answers=len(items),
        total_seconds=round(sum(secs), 3),
        mean_seconds=round(sum(secs) / len(secs), 3) if secs else None,
    )
    data["complete"] = len(items) >= planned_total
    write_json_atomic(path, data)


def run_interview(
    plan: InterviewPlan,
    backend: Backend,
    output: Path,
    *,
    model: dict[str, Any],
    prompted: bool,
    interviewer: Interviewer | None = None,
    interviewer_info: dict[str, Any] | None = None,
    progress: Progress | None = None,
    knowledge: bool = False,
) -> tuple[dict[str, Any], list[int]]:
    """Ask the planned questions not yet answered in ``output``; return (results, new indices).

    The file is written after every answer. Ctrl-C (KeyboardInterrupt) leaves it holding every
    finished answer.
    """
    if plan.turns and interviewer is None:
        interviewer = Interviewer(backend, plan.profile, plan.questions)
    data = open_results(Path(output), plan, model, interviewer_info)
    scene = Scene(location=data["setting"]["location"], status=data["setting"]["status"])
    done = {int(it["index"]) for it in data["items"]}
    todo = [i for i in plan.planned() if i not in done]
    total = len(plan.planned())
    finished = total - len(todo)
    if progress:
        progress(finished, total)
    new: list[int] = []

    def ask(i: int) -> dict[str, Any]:
        return _ask(plan, i, backend, scene, prompted, interviewer, knowledge)

    # several questions (or conversations) at once: a local model decodes them together;
    # each has its own seed, so the answers do not depend on the order they finish in
    workers = concurrency(backend)
    if interviewer is not None and interviewer.backend is not backend:
        concurrency(interviewer.backend)
    for i, item in zip(todo, ordered_map(ask, todo, workers)):
        data["items"].append(item)
        new.append(i)
        finished += 1
        _save(Path(output), data, len(plan.questions))
        if progress:
            progress(finished, total)
    if not todo:
        _save(Path(output), data, len(plan.questions))
    return data, new


def _ask(
    plan: InterviewPlan,
    i: int,
    backend: Backend,
    scene: Scene,
    prompted: bool,
    interviewer: Interviewer | None,
    knowledge: bool,
) -> dict[str, Any]:
    """The results item of question ``i``: one answer, or a whole multi-turn conversation."""
    q, profile = plan.questions[i], plan.profile
    system = roleplay.profile_system_message(profile, scene, prompted=prompted, query=q.question)
    seed = None if plan.params.seed is None else plan.params.seed + 1000 * i
    params = plan.params.with_(seed=seed)
    item: dict[str, Any] = {
        "index": i,
        "topic_id": q.topic_id,
        "topic": q.topic,
        "question": q.question,
    }
    if q.answer_keywords:
        item["answer_keywords"] = list(q.answer_keywords)
    if not plan.turns:
        ans = answer(
            backend,
            profile,
            scene,
            [roleplay.Turn(roleplay.INTERVIEWER, q.question)],
            system=system,
            params=params,
            knowledge=knowledge,
        )
        item.update(_answer_record(profile, ans))
    else:
        assert interviewer is not None
        item.update(
            _multi_turn(
                backend, profile, scene, q, system, params, plan.turns, interviewer, knowledge
            )
        )
    return item


def _multi_turn(
    backend: Backend,
    profile: Profile,
    scene: Scene,
    q: Question,
    system: str,
    params: GenParams,
    follow_ups: int,
    interviewer: Interviewer,
    knowledge: bool = False,
) -> dict[str, Any]:
    name = profile.short_name
    turns: list[roleplay.Turn] = []
    exchanges: list[dict[str, Any]] = []
    current = {"question": q.question, "source": "set", "reask_of": None}
    start = time.perf_counter()
    for step in range(follow_ups + 1):
        turns.append(roleplay.Turn(roleplay.INTERVIEWER, current["question"]))
        step_params = params.with_(seed=None if params.seed is None else params.seed + 10 * step)
        ans = answer(
            backend, profile, scene, turns, system=system, params=step_params, knowledge=knowledge
        )
        record = {**current, **_answer_record(profile, ans)}
        exchanges.append(record)
        turns.extend(roleplay.Turn(name, p.content.strip(), p.action) for p in ans.parts)
        if step == follow_ups:
            break
        t0 = time.perf_counter()
        seed = None if params.seed is None else params.seed + 10 * step + 7
        current = interviewer.next_question(exchanges, q.topic, step, seed)
        current["interviewer_seconds"] = round(time.perf_counter() - t0, 3)
    first = exchanges[0]
    return {
        "reply": first["reply"],
        "thinking": first["thinking"],
        "speaking": first["speaking"],
        "exchanges": exchanges,
        "seconds": round(time.perf_counter() - start, 3),
    }

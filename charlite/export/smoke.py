"""The smoke test every export must pass: load it through llama.cpp and ask one fixed question.

It fails only on what is really broken:

* the reply shows the template: a control token such as ``<|im_start|>`` or ``<|im_end|>``, or
  a bare role line such as ``assistant``;
* the reply is empty;
* the reply never ends (no end-of-turn within :data:`SMOKE_BUDGET` tokens) where the base
  model alone, asked the same, ends well within that budget: training broke the end of turn.

A reply that merely runs long (past :data:`SMOKE_LONG` tokens), or that rambles on exactly as
its base does, is a *warning* printed with the export: how long a model talks depends on the
machine (CPU kernels and threads change greedy decoding), and a base that rambles is not the
export's fault. Greedy decoding makes a run repeatable on one machine.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlite import roleplay
from charlite.backends.llamacpp import (
    _silence_llama_log,
    default_threads,
    quiet_native,
    set_chat_handler,
)
from charlite.errors import ExportError
from charlite.gguf import check_adapter_matches_base, check_gguf, read_gguf_header

if TYPE_CHECKING:
    from charlite.profile import Profile

SMOKE_QUESTION = "Who are you, and where are we right now?"
SMOKE_LONG = 256
"""A reply longer than this many tokens is a warning."""
SMOKE_BUDGET = 1024
"""A reply that has not ended after this many tokens never ends (a failure where the base's does)."""
SMOKE_CTX = 3072  # the budget and a long system message both fit
ROLE_LINES = {"system", "user", "assistant"}


@dataclass
class SmokeResult:
    ok: bool
    model: str
    lora: str | None
    question: str
    reply: str
    finish_reason: str | None
    tokens: int | None
    seconds: float
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def control_tokens(path: Path) -> list[str]:
    """The control tokens of a GGUF vocabulary that look like markup (``<|im_end|>``, ``<s>``)."""
    kv = read_gguf_header(path, arrays=("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")).kv
    tokens = kv.get("tokenizer.ggml.tokens") or []
    types = kv.get("tokenizer.ggml.token_type") or []
    return [t for t, k in zip(tokens, types) if k == 3 and len(t) >= 3 and t.startswith("<")]


def text_problems(reply: str, markers: list[str]) -> list[str]:
    """What is wrong with a smoke-test reply's text, however it ended (empty list: nothing)."""
    problems = []
    if not reply.strip():
        problems.append("the reply is empty")
    leaked = sorted({m for m in [*markers, "<|"] if m in reply})
    if leaked:
        problems.append(f"template tokens leak into the text: {', '.join(leaked)}")
    roles = sorted({ln.strip() for ln in reply.split("\n") if ln.strip().lower() in ROLE_LINES})
    if roles:
        problems.append(f"template role lines leak into the text: {', '.join(roles)}")
    return problems


def reply_problems(reply: str, finish_reason: str | None, markers: list[str]) -> list[str]:
    """Everything wrong with a reply judged alone, a reply cut short included."""
    problems = []
    if finish_reason != "stop":
        problems.append(f"generation did not stop by itself (finish_reason {finish_reason!r})")
    return problems + text_problems(reply, markers)


def _messages(profile: Profile) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": roleplay.profile_system_message(profile)},
        {"role": "user", "content": roleplay.user_line(None, SMOKE_QUESTION)},  # as chat asks
    ]


def _generate(
    model: Path,
    lora: Path | None,
    messages: list[dict[str, str]],
    max_tokens: int,
    verbose: bool,
    chat_template: str | None = None,
) -> tuple[str, str | None, int | None]:
    """(reply, finish_reason, completion tokens) of one greedy reply from a freshly loaded model."""
    import llama_cpp

    if not verbose:
        _silence_llama_log()
    kwargs: dict[str, Any] = {
        "model_path": str(model),
        "n_ctx": SMOKE_CTX,
        "verbose": verbose,
        "n_threads": default_threads(),
    }
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    try:
        with quiet_native(not verbose):
            llm = llama_cpp.Llama(**kwargs)
    except (ValueError, RuntimeError) as exc:
        raise ExportError(
            f"smoke test: llama.cpp could not load {Path(model).name}: {exc}"
        ) from None
    if chat_template and not llm.metadata.get("tokenizer.chat_template"):
        # a base model without a template, trained with a fallback one: ask it that way
        set_chat_handler(llm, chat_template)
    try:
        out = llm.create_chat_completion(
            messages=messages, temperature=0.0, seed=0, repeat_penalty=1.15, max_tokens=max_tokens
        )
    finally:
        with contextlib.suppress(Exception):
            llm.close()
    choice = out["choices"][0]
    tokens = (out.get("usage") or {}).get("completion_tokens")
    return choice["message"].get("content") or "", choice.get("finish_reason"), tokens


@lru_cache(maxsize=4)
def _base_reply(
    path: str,
    size: int,
    mtime_ns: int,
    messages: tuple[tuple[str, str], ...],
    budget: int,
    chat_template: str | None = None,
) -> tuple[str | None, int | None]:
    """(finish_reason, tokens) of the base model alone: asked once per export, not per file."""
    asked = [{"role": role, "content": content} for role, content in messages]
    _, reason, tokens = _generate(Path(path), None, asked, budget, False, chat_template)
    return reason, tokens


def _base_verdict(
    base: Path,
    messages: list[dict[str, str]],
    max_tokens: int,
    chat_template: str | None,
    cut: str,
    problems: list[str],
    warnings: list[str],
) -> None:
    """A reply that did not end: a problem if ``base`` alone ends within half the budget,
    otherwise a warning (the rambling is the base's)."""
    st = Path(base).stat()
    base_reason, base_tokens = _base_reply(
        str(Path(base).resolve()),
        st.st_size,
        st.st_mtime_ns,
        tuple((m["role"], m["content"]) for m in messages),
        max_tokens,
        chat_template,
    )
    name = Path(base).name
    if base_reason == "stop" and (base_tokens or 0) <= max_tokens // 2:
        problems.insert(0, f"{cut}, where the base model {name} ends after {base_tokens} tokens")
    elif base_reason == "stop":
        warnings.append(
            f"the reply did not end within {max_tokens} tokens; the base model {name} "
            f"alone talks long too ({base_tokens} tokens)"
        )
    else:
        warnings.append(
            f"the reply did not end within {max_tokens} tokens, and neither does the base "
            f"model {name} alone: the base rambles, not the training"
        )


def smoke_test(
    profile: Profile,
    model: Path,
    lora: Path | None = None,
    *,
    base: Path | None = None,
    max_tokens: int | None = None,
    long_after: int | None = None,
    verbose: bool = False,
    chat_template: str | None = None,
) -> SmokeResult:
    """Ask ``profile``'s trained system message :data:`SMOKE_QUESTION`; never raises on a bad reply.

    ``max_tokens`` (default :data:`SMOKE_BUDGET`) is the budget a reply must end within. When
    it does not, ``base`` (the model the export was trained from) is asked the same: the export
    fails only if the base ends its reply within half the budget; otherwise the rambling is the
    base's, and only a warning. Without ``base``, a reply that does not end is a failure. A
    reply longer than ``long_after`` (default :data:`SMOKE_LONG`) tokens is a warning.
    """
    max_tokens = max_tokens or SMOKE_BUDGET
    long_after = long_after or SMOKE_LONG

    check_gguf(model)  # a damaged file is an error here, not an abort in llama.cpp
    if lora is not None:
        check_adapter_matches_base(lora, model)  # so is an adapter with mistyped metadata
    if base is not None:
        check_gguf(base)
    messages = _messages(profile)
    start = time.perf_counter()
    reply, reason, tokens = _generate(model, lora, messages, max_tokens, verbose, chat_template)
    problems = text_problems(reply, control_tokens(model))
    warnings = []
    if reason == "stop":
        if tokens is not None and tokens > long_after:
            warnings.append(
                f"the reply runs long ({tokens} tokens before it ends; a short answer is "
                f"under {long_after})"
            )
    else:
        cut = f"generation did not stop by itself within {max_tokens} tokens (finish_reason {reason!r})"
        if base is None:
            problems.insert(0, cut)
        else:
            _base_verdict(base, messages, max_tokens, chat_template, cut, problems, warnings)
    return SmokeResult(
        ok=not problems,
        model=Path(model).name,
        lora=Path(lora).name if lora else None,
        question=SMOKE_QUESTION,
        reply=reply,
        finish_reason=reason,
        tokens=tokens,
        seconds=round(time.perf_counter() - start, 2),
        problems=problems,
        warnings=warnings,
    )


def require_pass(result: SmokeResult) -> SmokeResult:
    """Raise an ExportError that quotes the reply when the smoke test failed."""
    if not result.ok:
        what = result.model + (f" + {result.lora}" if result.lora else "")
        excerpt = " ".join(result.reply.split())[:160]
        raise ExportError(
            f"smoke test failed for {what}: {result.problems[0]} (reply: {excerpt!r})",
            hint="train longer or on more data, then export again",
        )
    return result

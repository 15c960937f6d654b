"""The smoke test every export must pass: load it through llama.cpp and ask one fixed question.

The reply must end by itself (``finish_reason == "stop"``, not cut at ``max_tokens``), be
non-empty, and show none of the template: no control token such as ``<|im_start|>`` or
``<|im_end|>``, no bare role line such as ``assistant``. Greedy decoding makes it repeatable.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlite.errors import ExportError

if TYPE_CHECKING:
    from charlite.profile import Profile

SMOKE_QUESTION = "Who are you, and where are we right now?"
SMOKE_MAX_TOKENS = 256
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def control_tokens(path: Path) -> list[str]:
    """The control tokens of a GGUF vocabulary that look like markup (``<|im_end|>``, ``<s>``)."""
    from charlite.export.ggufio import read_gguf_header

    kv = read_gguf_header(path, arrays=("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")).kv
    tokens = kv.get("tokenizer.ggml.tokens") or []
    types = kv.get("tokenizer.ggml.token_type") or []
    return [t for t, k in zip(tokens, types) if k == 3 and len(t) >= 3 and t.startswith("<")]


def reply_problems(reply: str, finish_reason: str | None, markers: list[str]) -> list[str]:
    """What is wrong with a smoke-test reply (empty list: nothing)."""
    problems = []
    if finish_reason != "stop":
        problems.append(f"generation did not stop by itself (finish_reason {finish_reason!r})")
    if not reply.strip():
        problems.append("the reply is empty")
    leaked = sorted({m for m in [*markers, "<|"] if m in reply})
    if leaked:
        problems.append(f"template tokens leak into the text: {', '.join(leaked)}")
    roles = sorted({ln.strip() for ln in reply.split("\n") if ln.strip().lower() in ROLE_LINES})
    if roles:
        problems.append(f"template role lines leak into the text: {', '.join(roles)}")
    return problems


def smoke_test(
    profile: Profile,
    model: Path,
    lora: Path | None = None,
    *,
    max_tokens: int = SMOKE_MAX_TOKENS,
    verbose: bool = False,
    chat_template: str | None = None,
) -> SmokeResult:
    """Ask ``profile``'s trained system message and :data:`SMOKE_QUESTION`; never raises on a bad reply."""
    import llama_cpp

    from charlite import roleplay
    from charlite.backends.llamacpp import _silence_llama_log, quiet_native
    from charlite.export.ggufio import read_gguf_header

    read_gguf_header(model)  # a damaged file is an error here, not an abort in llama.cpp
    if lora is not None:
        read_gguf_header(lora)
    messages = [
        {"role": "system", "content": roleplay.profile_system_message(profile)},
        {
            "role": "user",
            "content": roleplay.user_line(None, SMOKE_QUESTION),
        },  # as charlite chat asks
    ]
    if not verbose:
        _silence_llama_log()
    kwargs: dict[str, Any] = {
        "model_path": str(model),
        "n_ctx": 2048,
        "verbose": verbose,
        "n_threads": max(1, os.cpu_count() or 1),
    }
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    start = time.perf_counter()
    try:
        with quiet_native(not verbose):
            llm = llama_cpp.Llama(**kwargs)
    except (ValueError, RuntimeError) as exc:
        raise ExportError(
            f"smoke test: llama.cpp could not load {Path(model).name}: {exc}"
        ) from None
    if chat_template and not llm.metadata.get("tokenizer.chat_template"):
        # a base model without a template, trained with a fallback one: ask it that way
        from llama_cpp import llama_chat_format

        eos, bos = llm.token_eos(), llm.token_bos()
        llm.chat_handler = llama_chat_format.Jinja2ChatFormatter(
            template=chat_template,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        ).to_chat_handler()
    try:
        out = llm.create_chat_completion(
            messages=messages, temperature=0.0, seed=0, repeat_penalty=1.15, max_tokens=max_tokens
        )
    finally:
        with contextlib.suppress(Exception):
            llm.close()
    choice = out["choices"][0]
    reply = choice["message"].get("content") or ""
    reason = choice.get("finish_reason")
    problems = reply_problems(reply, reason, control_tokens(model))
    return SmokeResult(
        ok=not problems,
        model=Path(model).name,
        lora=Path(lora).name if lora else None,
        question=SMOKE_QUESTION,
        reply=reply,
        finish_reason=reason,
        tokens=(out.get("usage") or {}).get("completion_tokens"),
        seconds=round(time.perf_counter() - start, 2),
        problems=problems,
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

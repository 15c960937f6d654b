"""The OpenAI chat-completions protocol as charlite speaks it: requests, errors, prompts, replies.

No web framework here: :mod:`charlite.serve.app` moves these objects over HTTP.

A request's ``model`` is a character's slug. The prompt is charlite's role-play format
(:mod:`charlite.roleplay`): the character's system message, then the client's own system
message after it; user messages become ``Speaker: text`` lines (the speaker is the message's
``name``, else "Visitor"); earlier assistant messages are the character's turns.

Extra request fields (pass them with the ``openai`` client's ``extra_body``):

* ``show_thoughts`` (or ``charlite.show_thoughts``): keep the ``(thinking)`` lines;
* ``charlite.location`` / ``charlite.status``: the scene of this chat;
* ``charlite.prompted``: use the base model with the profile, even when a trained export exists.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from charlite import roleplay
from charlite.backends import GenParams
from charlite.chat import CHAT_PARAMS
from charlite.profile import Profile, Scene

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_STOP = 4
MAX_CHOICES = 16
"""``n`` at most: choices are generated one after another."""
MAX_NAME = 60


class APIError(Exception):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type,
            code,
            param,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text; a list of parts must hold only text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(
                    400,
                    f"charlite characters read text only, not '{part.get('type')}' content parts",
                    param="messages",
                    code="unsupported_content",
                )
            texts.append(part["text"])
        return "\n".join(texts)


class CharliteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    show_thoughts: bool = False
    location: str | None = Field(None, min_length=1, max_length=500)
    status: str | None = Field(None, min_length=1, max_length=2000)
    prompted: bool = False


class ChatRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` charlite reads; others are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    show_thoughts: bool = False
    charlite: CharliteOptions | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        items = [v] if isinstance(v, str) else list(v or [])
        if len(items) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s for s in items):
            raise ValueError("stop sequences must not be empty")
        return items

    @property
    def wants_thoughts(self) -> bool:
        return self.show_thoughts or bool(self.charlite and self.charlite.show_thoughts)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    @property
    def choices(self) -> int:
        return self.n or 1

    @property
    def ignored_tools(self) -> int:
        """How many tools the client offered that the character will not call (0 when the
        client itself said ``tool_choice: none``)."""
        offered = len(self.tools or []) + len(self.functions or [])
        said_none = (self.tool_choice or self.function_call) == "none"
        return 0 if said_none else offered


def parse_request(body: Any) -> ChatRequest:
    """Validate a decoded JSON body; a problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        raise APIError(
            400, f"Invalid value for '{loc}': {msg}", param=loc, code="invalid_value"
        ) from None
    if request.choices > MAX_CHOICES:
        raise APIError(
            400,
            f"charlite answers with at most {MAX_CHOICES} choices: 'n' must be 1 to {MAX_CHOICES}",
            param="n",
            code="invalid_value",
        )
    _check_tools(request)
    if request.response_format and request.response_format.get("type") not in (None, "text"):
        raise APIError(
            400,
            "charlite characters answer in text only",
            param="response_format",
            code="unsupported_parameter",
        )
    return request


def _check_tools(request: ChatRequest) -> None:
    """Offered tools are accepted and never called (a character answers in words, as
    llama.cpp's server does without a tool-calling template); a client that *demands* a call
    (``tool_choice: required`` or a named function) gets a 400, as no reply could satisfy it."""
    if not (request.tools or request.functions):
        return
    for param, choice in (
        ("tool_choice", request.tool_choice),
        ("function_call", request.function_call),
    ):
        if choice == "required" or isinstance(choice, dict):
            raise APIError(
                400,
                f"charlite characters do not call tools: '{param}' must be 'auto' or 'none'",
                param=param,
                code="unsupported_parameter",
            )


def choice_seed(seed: int | None, index: int) -> int | None:
    """The seed of choice ``index``: the request's for the first, then the next ones, so the
    choices of a seeded request differ from each other and repeat as a whole."""
    if index == 0 or seed is None:
        return seed
    return (seed + index) % (1 << 31)


def gen_params(request: ChatRequest, n_ctx: int) -> GenParams:
    max_tokens = request.max_completion_tokens or request.max_tokens or CHAT_PARAMS.max_tokens
    if max_tokens >= n_ctx:
        raise APIError(
            400,
            f"max_tokens={max_tokens} does not fit this model's context of {n_ctx} tokens",
            param="max_tokens",
            code="invalid_value",
        )
    return CHAT_PARAMS.with_(
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        max_tokens=max_tokens,
        stop=tuple(request.stop or ()) or None,
    )


@dataclass
class Prompt:
    """The chat messages sent to the model, and what was dropped to fit its context."""

    messages: list[dict[str, str]]
    dropped: int = 0
    scene: Scene | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _speaker(name: str | None) -> str:
    if not name:
        return roleplay.DEFAULT_USER
    clean = " ".join(name.replace(":", " ").split())[:MAX_NAME]
    return clean or roleplay.DEFAULT_USER


def _conversation(
    profile: Profile, request: ChatRequest
) -> tuple[list[str], list[dict[str, str]], str]:
    """The client's system texts, the turns in the role-play format (a speaker's messages in a
    row joined into one) and the first user message."""
    client_system: list[str] = []
    turns: list[dict[str, str]] = []
    first_user = ""
    for i, msg in enumerate(request.messages):
        if msg.role in ("tool", "function"):
            raise APIError(400, "charlite characters do not call tools", param=f"messages.{i}.role")
        text = msg.text()
        if msg.role in ("system", "developer"):
            if text.strip():
                client_system.append(text.strip())
            continue
        if msg.role == "user":
            content = roleplay.user_line(_speaker(msg.name), text)
            first_user = first_user or text
        else:
            parts = roleplay.parse_reply(text, profile.short_name)
            content = roleplay.render_reply(
                roleplay.Turn(profile.short_name, p.content.strip(), p.action) for p in parts
            )
            if not content:
                continue
        role = "user" if msg.role == "user" else "assistant"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n" + content
        else:
            turns.append({"role": role, "content": content})
    if not any(t["role"] == "user" for t in turns):
        raise APIError(400, "the conversation needs at least one user message", param="messages")
    return client_system, turns, first_user


def build_prompt(
    profile: Profile,
    request: ChatRequest,
    *,
    prompted: bool,
    count_tokens,
    n_ctx: int,
    max_tokens: int,
) -> Prompt:
    """The role-play messages for ``request``, oldest turns dropped to fit ``n_ctx``."""
    client_system, turns, first_user = _conversation(profile, request)
    options = request.charlite
    scene = profile.default_scene
    if options and (options.location or options.status):
        scene = Scene(
            location=options.location or scene.location, status=options.status or scene.status
        )
    system = roleplay.profile_system_message(profile, scene, prompted=prompted, query=first_user)
    if client_system:
        system += "\n\n" + "\n\n".join(client_system)
    fitted = roleplay.fit_context(
        [{"role": "system", "content": system}, *turns],
        count_tokens=count_tokens,
        n_ctx=n_ctx,
        max_tokens=max_tokens,
    )
    if not fitted.fits:
        raise APIError(
            400,
            f"the prompt needs about {fitted.tokens} tokens, but this model's context of "
            f"{n_ctx} tokens leaves {max(fitted.budget, 0)} with max_tokens={max_tokens}; send a "
            "shorter message or a smaller max_tokens",
            param="messages",
            code="context_length_exceeded",
        )
    return Prompt(fitted.messages, dropped=fitted.first, scene=scene)


# ---------------------------------------------------------------------------------------------
# Replies


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(
    cid: str,
    model: str,
    text: str,
    finish_reason: str | None,
    usage: dict[str, int],
    *,
    more: Sequence[tuple[str, str | None]] = (),
) -> dict[str, Any]:
    """A whole reply; ``more`` holds the (text, finish_reason) of choices 1, 2… when ``n > 1``."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": t, "refusal": None},
                "logprobs": None,
                "finish_reason": reason or "stop",
            }
            for i, (t, reason) in enumerate([(text, finish_reason), *more])
        ],
        "usage": usage,
    }


def chunk_body(
    cid: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }

"""The one interface every model is reached through: chat messages in, a reply out."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from charlite.spec import ModelSpec

Messages = Sequence[dict[str, str]]
DEFAULT_CTX = 2048
"""Context size of a local model (llama.cpp), and of the Modelfiles charlite writes."""


@dataclass(frozen=True)
class GenParams:
    """Sampling settings shared by every backend."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None
    repeat_penalty: float = 1.1
    stop: tuple[str, ...] = ()

    def with_(self, **changes: Any) -> GenParams:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


CHAT_PARAMS = GenParams(temperature=0.7, top_p=0.95, max_tokens=200, repeat_penalty=1.15)
"""Sampling for a character's replies: chat, the API server, and exported Modelfiles."""


@dataclass
class Delta:
    """A piece of a streamed reply; the last one carries ``finish_reason``."""

    text: str
    finish_reason: str | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def json(self) -> Any:
        """The reply parsed as JSON (for schema-constrained calls)."""
        return json.loads(self.text)


class Backend(ABC):
    """A model that answers chat messages."""

    spec: ModelSpec
    n_ctx: int = 4096

    @abstractmethod
    def stream(self, messages: Messages, params: GenParams | None = None) -> Iterator[Delta]:
        """Yield the reply piece by piece."""

    def chat(
        self,
        messages: Messages,
        params: GenParams | None = None,
        schema: dict[str, Any] | None = None,
    ) -> Completion:
        """The whole reply; with ``schema``, output constrained to that JSON schema."""
        if schema is not None:
            return self.chat_json(messages, schema, params)
        text, reason = [], None
        for delta in self.stream(messages, params):
            text.append(delta.text)
            reason = delta.finish_reason or reason
        return Completion("".join(text), reason)

    @abstractmethod
    def chat_json(
        self, messages: Messages, schema: dict[str, Any], params: GenParams | None = None
    ) -> Completion:
        """A reply constrained to ``schema`` (check ``truncated`` before parsing)."""

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``; a rough estimate where the backend has no tokenizer."""
        return max(1, len(text) // 4)

    def describe(self) -> str:
        return str(self.spec)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


@runtime_checkable
class Batching(Protocol):
    """A backend that decodes many requests together on one loaded model (llama.cpp).

    After :meth:`enable_batching`, ``chat``, ``stream`` and ``chat_json`` calls from several
    threads share decode steps instead of waiting for each other.
    """

    def enable_batching(self, parallel: int | None = None) -> int:
        """Route calls through the shared batch; returns the number of parallel sequences."""
        ...

    def complete_many(
        self, requests: Sequence[tuple[Messages, GenParams | None, dict[str, Any] | None]]
    ) -> list[Completion | Exception]:
        """Replies to many ``(messages, params, schema)``, decoded together, in order."""
        ...

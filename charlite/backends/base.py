"""The one interface every model is reached through: chat messages in, a reply out."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
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

    def seed_and_stop(self) -> dict[str, Any]:
        """``seed`` and ``stop`` as an HTTP request carries them, each only when set."""
        out: dict[str, Any] = {}
        if self.seed is not None:
            out["seed"] = self.seed
        if self.stop:
            out["stop"] = list(self.stop)
        return out


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
    """A model that answers chat messages: :meth:`complete` for the whole reply, :meth:`stream`
    for it piece by piece. A failed request raises a
    :class:`~charlite.errors.RequestError` whatever the transport."""

    spec: ModelSpec
    n_ctx: int = 4096

    @abstractmethod
    def complete(
        self,
        messages: Messages,
        params: GenParams | None = None,
        schema: dict[str, Any] | None = None,
    ) -> Completion:
        """The whole reply; with ``schema``, output constrained to that JSON schema (check
        ``truncated`` before parsing)."""

    @abstractmethod
    def stream(self, messages: Messages, params: GenParams | None = None) -> Iterator[Delta]:
        """Yield the reply piece by piece."""

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``; a rough estimate where the backend has no tokenizer."""
        return max(1, len(text) // 4)

    def describe(self) -> str:
        return str(self.spec)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


@runtime_checkable
class LocalModel(Protocol):
    """A model file loaded in this process (llama.cpp): what only a local model can do."""

    path: Path
    """The model file."""
    lora: Path | None
    """The adapter applied now, or None."""

    def prime(self, system: str, cache: Any = None) -> str:
        """Evaluate (or restore from ``cache``) the tokens every conversation with ``system``
        starts with: "warm", "restored" or "evaluated"."""
        ...

    def set_adapter(self, lora: Path | None) -> None:
        """Apply ``lora`` (an adapter for this model) from now on, or none, without a reload."""
        ...

    def prompt_tokens(self, messages: Messages) -> list[int]:
        """The tokens the model evaluates for ``messages`` (with the generation prompt)."""
        ...


@runtime_checkable
class Batching(Protocol):
    """A backend that decodes many requests together on one loaded model (llama.cpp).

    After :meth:`enable_batching`, ``complete`` and ``stream`` calls from several threads share
    decode steps instead of waiting for each other.
    """

    def enable_batching(self, parallel: int | None = None) -> int:
        """Route calls through the shared batch; returns the number of parallel sequences."""
        ...

    def complete_many(
        self, requests: Sequence[tuple[Messages, GenParams | None, dict[str, Any] | None]]
    ) -> list[Completion | Exception]:
        """Replies to many ``(messages, params, schema)``, decoded together, in order."""
        ...

"""Ollama (``ollama:TAG``) through the ``ollama`` Python client.

The server is a separate program (``ollama serve``); ``OLLAMA_HOST`` says where it listens
(default ``http://127.0.0.1:11434``). Streaming, JSON-schema ``format`` and sampling options
map onto :class:`~charlite.backends.base.GenParams`. A server that cannot be reached is one
clear :class:`~charlite.errors.BackendError`, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from charlite.backends.base import Backend, Completion, Delta, GenParams, Messages
from charlite.errors import BackendError
from charlite.spec import ModelSpec

DEFAULT_HOST = "http://127.0.0.1:11434"
OLLAMA_CTX = 2048


def ollama_host(host: str | None = None) -> str:
    """The server URL the client will use: ``host``, else ``$OLLAMA_HOST``, else the default."""
    value = host or os.environ.get("OLLAMA_HOST")
    try:
        from ollama._client import _parse_host
    except ImportError:  # pragma: no cover - a client without the helper
        if not value:
            return DEFAULT_HOST
        return value if "://" in value else f"http://{value}"
    return _parse_host(value)


class OllamaBackend(Backend):
    """A model served by Ollama."""

    def __init__(self, spec: ModelSpec, *, host: str | None = None, timeout: float | None = 600.0):
        try:
            import ollama
        except ImportError:  # pragma: no cover - a dependency of charlite
            raise BackendError(
                "the 'ollama' package is not installed", hint="pip install ollama"
            ) from None
        self.spec = spec
        self.host = ollama_host(host or spec.url)
        self.n_ctx = OLLAMA_CTX
        self._ollama = ollama
        self.client = ollama.Client(host=self.host, timeout=timeout)

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: Exception) -> BackendError:
        import httpx

        if isinstance(exc, self._ollama.ResponseError):
            if exc.status_code == 404:
                return BackendError(
                    f"Ollama at {self.host} has no model '{self.spec.name}' ({exc.error})",
                    hint=f"run 'ollama pull {self.spec.name}', or 'charlite export NAME --ollama' for a charlite-NAME model",
                )
            return BackendError(f"Ollama at {self.host} answered {exc.status_code}: {exc.error}")
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(f"Ollama at {self.host} did not answer in time")
        return BackendError(f"cannot reach Ollama at {self.host}: is `ollama serve` running?")

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the client; an error from the server is a BackendError."""
        import httpx

        try:
            return fn(*args, **kwargs)
        except (self._ollama.ResponseError, ConnectionError, httpx.HTTPError) as exc:
            raise self._error(exc) from None

    # -- chat --------------------------------------------------------------------------------

    @staticmethod
    def options(params: GenParams | None) -> dict[str, Any]:
        """Ollama ``options`` for charlite's sampling settings."""
        p = params or GenParams()
        opts: dict[str, Any] = {
            "temperature": p.temperature,
            "top_p": p.top_p,
            "num_predict": p.max_tokens,
            "repeat_penalty": p.repeat_penalty,
            **p.seed_and_stop(),
        }
        return opts

    def stream(self, messages: Messages, params: GenParams | None = None) -> Iterator[Delta]:
        import httpx

        parts = self.call(
            self.client.chat,
            self.spec.name,
            list(messages),
            stream=True,
            options=self.options(params),
            think=False,  # thinking models would spend the token budget on hidden reasoning
        )
        try:
            for part in parts:
                text = (part.message.content if part.message else "") or ""
                reason = _finish_reason(part) if part.done else None
                if text or reason:
                    yield Delta(text, reason)
        except (self._ollama.ResponseError, ConnectionError, httpx.HTTPError) as exc:
            raise self._error(exc) from None

    def complete(self, messages, params=None, schema=None) -> Completion:
        kwargs: dict[str, Any] = {
            "stream": False,
            "options": self.options(params),
            "think": False,  # thinking models would spend the token budget on hidden reasoning
        }
        if schema is not None:
            kwargs["format"] = schema
        out = self.call(self.client.chat, self.spec.name, list(messages), **kwargs)
        return Completion(
            text=(out.message.content if out.message else "") or "",
            finish_reason=_finish_reason(out),
            prompt_tokens=out.prompt_eval_count,
            completion_tokens=out.eval_count,
        )

    def describe(self) -> str:
        return f"{self.spec} at {self.host}"

    def close(self) -> None:
        self.client.close()

    # -- models ------------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Names of the models the server has (``/api/tags``)."""
        out = self.call(self.client.list)
        return [m.model for m in out.models if m.model]


def _finish_reason(part: Any) -> str:
    reason = getattr(part, "done_reason", None)
    return "length" if reason == "length" else "stop"

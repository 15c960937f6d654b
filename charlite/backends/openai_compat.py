"""Any OpenAI-compatible server (llama.cpp's server, vLLM, LM Studio) over HTTP with httpx."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx

from charlite.backends.base import Backend, Completion, Delta, GenParams, Messages
from charlite.errors import BackendError, PromptTooLongError
from charlite.spec import ModelSpec

_TOO_LONG = re.compile(r"context window|context length|context_length_exceeded", re.I)
"""How llama.cpp's, vLLM's and OpenAI's servers say a prompt is longer than the context."""


class OpenAIBackend(Backend):
    def __init__(self, spec: ModelSpec, *, timeout: float = 600.0, api_key: str | None = None):
        self.spec = spec
        self.base_url = spec.url or ""
        key = (
            api_key or os.environ.get("CHARLITE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
        key = (key or "").strip()  # a key pasted with a space or newline is still the key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            self.client = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        except (httpx.InvalidURL, ValueError) as exc:
            raise BackendError(
                f"'{self.base_url}' is not a usable server URL ({exc})",
                hint="write openai:MODEL@http://HOST:PORT/v1",
            ) from None
        self._json_object_only = False  # set when the server refuses OpenAI's json_schema format

    def _body(self, messages: Messages, params: GenParams | None, **extra: Any) -> dict[str, Any]:
        p = params or GenParams()
        body: dict[str, Any] = {
            "model": self.spec.name,
            "messages": list(messages),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            **p.seed_and_stop(),
        }
        if p.repeat_penalty and p.repeat_penalty != 1.0:
            body["repeat_penalty"] = (
                p.repeat_penalty
            )  # llama.cpp and vLLM accept it; others ignore it
        body.update(extra)
        return body

    def _unreachable(self, exc: Exception) -> BackendError:
        return BackendError(
            f"cannot reach the OpenAI-compatible server at {self.base_url} ({type(exc).__name__})",
            hint="is the server running, and is the URL right?",
        )

    def _check(self, resp: httpx.Response) -> None:
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("error", {})
                detail = detail.get("message") if isinstance(detail, dict) else detail
            except Exception:
                detail = resp.text[:200]
            message = f"{self.base_url} answered {resp.status_code}: {detail}"
            if resp.status_code == 400 and _TOO_LONG.search(str(detail)):
                raise PromptTooLongError(message, hint="send a shorter message")
            raise BackendError(message)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = self.client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        self._check(resp)
        try:
            return resp.json()
        except ValueError:
            raise BackendError(
                f"{self.base_url} answered with something that is not JSON"
            ) from None

    def stream(self, messages: Messages, params: GenParams | None = None) -> Iterator[Delta]:
        body = self._body(messages, params, stream=True)
        try:
            with self.client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                for line in resp.iter_lines():
                    # an SSE ``error`` event (older llama.cpp servers)
                    if line.startswith("error:"):
                        raise self._stream_error(_loads(line[6:].strip()) or line[6:].strip())
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = _loads(data)
                    if chunk is None:
                        continue
                    problem = _error_in(chunk)
                    if problem is not None:
                        raise self._stream_error(problem)
                    if not chunk.get("choices"):
                        continue
                    choice = chunk["choices"][0]
                    text = (choice.get("delta") or {}).get("content") or ""
                    reason = choice.get("finish_reason")
                    if text or reason:
                        yield Delta(text, reason)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _stream_error(self, problem: Any) -> BackendError:
        return BackendError(
            f"{self.base_url} stopped the reply with an error: {_error_text(problem)}",
            hint="see the server's log",
        )

    def complete(self, messages, params=None, schema=None) -> Completion:
        """The whole reply. With ``schema``, OpenAI's ``json_schema`` format; a server that
        refuses it (llama-cpp-python's) gets the ``json_object`` + ``schema`` form instead,
        remembered for the next calls."""
        if schema is None:
            return _completion(self._post(self._body(messages, params)))
        fallback = {"type": "json_object", "schema": schema}
        if self._json_object_only:
            return _completion(self._post(self._body(messages, params, response_format=fallback)))
        standard = {
            "type": "json_schema",
            "json_schema": {"name": "record", "schema": schema, "strict": True},
        }
        try:
            out = self._post(self._body(messages, params, response_format=standard))
        except BackendError as exc:
            if not _refuses_json_schema(exc.message):
                raise
            self._json_object_only = True
            out = self._post(self._body(messages, params, response_format=fallback))
        return _completion(out)

    def close(self) -> None:
        self.client.close()


def _refuses_json_schema(message: str) -> bool:
    """Whether a server's error answer is about OpenAI's ``json_schema`` response format."""
    return "answered" in message and ("json_schema" in message or "response_format" in message)


def _loads(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _error_in(body: Any) -> Any:
    """The error an OpenAI-style body reports, or None: ``{"error": ...}`` (OpenAI, llama.cpp)
    or ``{"object": "error", "message": ...}`` (older vLLM)."""
    if not isinstance(body, dict):
        return None
    if body.get("error"):
        return body["error"]
    if body.get("object") == "error":
        return body
    return None


def _error_text(problem: Any) -> str:
    if isinstance(problem, dict):
        message = problem.get("message") or problem.get("msg")
        code = problem.get("code") or problem.get("type")
        if message:
            return f"{' '.join(str(message).split())[:300]}" + (f" ({code})" if code else "")
        return json.dumps(problem, ensure_ascii=False)[:300]
    return " ".join(str(problem).split())[:300] or "no details"


def _completion(out: dict[str, Any]) -> Completion:
    problem = _error_in(out)
    if problem is not None:
        raise BackendError(f"the server answered with an error: {_error_text(problem)}")
    try:
        choice = out["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise BackendError("the server's reply has no choices") from None
    usage = out.get("usage") or {}
    return Completion(
        text=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )

"""llama.cpp through llama-cpp-python: the embedded model and any local GGUF.

A loaded model is kept per (file, adapters, context size) and reused across calls. The GGUF's
own chat template renders the messages. Native logging is silenced unless verbose.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from charlite.backends.base import Backend, Completion, Delta, GenParams, Messages
from charlite.errors import ModelError
from charlite.gguf_check import check_gguf
from charlite.spec import ModelSpec

DEFAULT_CTX = 2048
_LOADED: dict[tuple, Any] = {}
_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_native(enabled: bool = True) -> Iterator[None]:
    """Silence what C code prints to stdout/stderr (llama.cpp, the quantizer)."""
    if not enabled:
        yield
        return
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
            except OSError:
                pass
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def _silence_llama_log() -> None:
    import llama_cpp

    if getattr(_silence_llama_log, "done", False):
        return

    @llama_cpp.llama_log_callback
    def _noop(level, text, user_data):  # pragma: no cover - called from C
        return None

    llama_cpp.llama_log_set(_noop, None)
    _silence_llama_log.done = True  # type: ignore[attr-defined]
    _silence_llama_log.cb = _noop  # type: ignore[attr-defined]  # keep a reference alive


def load_llama(
    path: Path,
    lora: Path | None = None,
    n_ctx: int = DEFAULT_CTX,
    verbose: bool = False,
    n_threads: int | None = None,
):
    """A cached ``llama_cpp.Llama`` for this file (and adapter), checked before loading."""
    info = check_gguf(path)
    if info.file_type == "adapter":
        raise ModelError(f"{path} is a LoRA adapter, not a model", hint="pass the base model and the adapter separately")
    if lora is not None:
        ainfo = check_gguf(lora)
        if ainfo.file_type != "adapter":
            raise ModelError(f"{lora} is not a LoRA adapter GGUF")
        if ainfo.architecture != info.architecture:
            raise ModelError(
                f"adapter {lora} is for a {ainfo.architecture} model, not {info.architecture}",
                hint="export the adapter from a run trained on this base",
            )
    key = (str(Path(path).resolve()), str(lora) if lora else None, n_ctx)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ModelError(f"llama-cpp-python is not importable: {exc}", hint="pip install llama-cpp-python") from None
        if not verbose:
            _silence_llama_log()
        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": n_ctx,
            "verbose": verbose,
            "n_threads": n_threads or max(1, (os.cpu_count() or 2)),
        }
        if lora is not None:
            kwargs["lora_path"] = str(lora)
        try:
            with quiet_native(not verbose):
                llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {path}: {exc}") from None
        _LOADED[key] = llm
        return llm


def unload_all() -> None:
    with _LOCK:
        for llm in _LOADED.values():
            with contextlib.suppress(Exception):
                llm.close()
        _LOADED.clear()


class LlamaCppBackend(Backend):
    """A local GGUF through llama.cpp. One model at a time generates (llama.cpp is not re-entrant)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        path: Path | None = None,
        lora: Path | None = None,
        n_ctx: int = DEFAULT_CTX,
        verbose: bool = False,
    ):
        self.spec = spec
        self.path = Path(path) if path else spec.gguf_path()
        self.lora = Path(lora) if lora else None
        self.verbose = verbose
        self.llm = load_llama(self.path, self.lora, n_ctx, verbose)
        self.n_ctx = self.llm.n_ctx()
        self._gen_lock = threading.Lock()

    def _kwargs(self, params: GenParams | None) -> dict[str, Any]:
        p = params or GenParams()
        return {
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "seed": p.seed,
            "repeat_penalty": p.repeat_penalty,
            "stop": list(p.stop) or None,
        }

    def stream(self, messages: Messages, params: GenParams | None = None) -> Iterator[Delta]:
        with self._gen_lock:
            chunks = self.llm.create_chat_completion(
                messages=list(messages), stream=True, **self._kwargs(params)
            )
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content") or ""
                reason = choice.get("finish_reason")
                if text or reason:
                    yield Delta(text, reason)

    def chat(self, messages, params=None, schema=None) -> Completion:
        if schema is not None:
            return self.chat_json(messages, schema, params)
        with self._gen_lock:
            out = self.llm.create_chat_completion(messages=list(messages), **self._kwargs(params))
        return _completion(out)

    def chat_json(self, messages, schema, params=None) -> Completion:
        with self._gen_lock:
            out = self.llm.create_chat_completion(
                messages=list(messages),
                response_format={"type": "json_object", "schema": schema},
                **self._kwargs(params),
            )
        return _completion(out)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def describe(self) -> str:
        base = f"{self.spec} ({self.path.name})" if self.spec.kind == "gguf" else str(self.spec)
        return f"{base} + {self.lora.name}" if self.lora else base


def _completion(out: dict) -> Completion:
    choice = out["choices"][0]
    usage = out.get("usage") or {}
    return Completion(
        text=choice["message"].get("content") or "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )

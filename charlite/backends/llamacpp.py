"""llama.cpp through llama-cpp-python: the embedded model and any local GGUF.

A loaded model is kept per (file, adapters, context size) and reused across calls. The GGUF's
own chat template renders the messages (a GGUF without one, such as a base model's, gets the
fallback template of :mod:`charlite.chat_templates`, the one training used). Native logging is
silenced unless verbose.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import charlite.backends.batching as batching
from charlite import settings
from charlite.backends.base import DEFAULT_CTX, Backend, Completion, Delta, GenParams, Messages
from charlite.chat_templates import fallback_for_vocab
from charlite.errors import CharliteError, ModelError, PromptTooLongError, RequestError
from charlite.gguf import check_adapter_matches_base, check_gguf
from charlite.persona_cache import cache_key
from charlite.spec import ModelSpec

STASH_ENTRIES = 4  # adapters whose evaluated state is kept across hot-swaps
STASH_MAX_BYTES = 256 * 1024**2
_LOADED: dict[tuple, LoadedModel] = {}
_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_native(enabled: bool = True) -> Iterator[None]:
    """Silence what C code prints to stdout/stderr (llama.cpp, the quantizer)."""
    if not enabled:
        yield
        return
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


def default_threads() -> int:
    """llama.cpp threads: the ``threads`` setting (``CHARLITE_THREADS``, config), else every core."""
    return settings.value("threads") or max(1, os.cpu_count() or 2)


@functools.cache
def _counting_llama() -> type:
    """``llama_cpp.Llama`` that counts the tokens it evaluates (made on first use: llama_cpp
    is imported only when a local model is loaded)."""
    import llama_cpp

    class CountingLlama(llama_cpp.Llama):
        """A ``Llama`` whose ``evaluated`` says how many tokens went through ``eval`` (the
        benchmarks and tests of KV reuse read it)."""

        evaluated = 0

        def eval(self, tokens):
            self.evaluated += len(tokens)
            return super().eval(tokens)

        def _init_sampler(self, *args, grammar=None, **kwargs):
            # a grammar (a JSON schema) is checked on the chain's choice, not on all ~49k
            # candidates: batching.Sampler, as llama.cpp's common_sampler
            if grammar is None or not batching.GRAMMAR_FAST_PATH:
                return super()._init_sampler(*args, grammar=grammar, **kwargs)
            chain = super()._init_sampler(*args, grammar=None, **kwargs)
            # the chain sees the best `need` allowed candidates: 1 greedy, top_k sampling
            temp, mirostat = kwargs.get("temp", 0.8), kwargs.get("mirostat_mode", 0)
            need = 0 if mirostat or temp < 0 else 1 if temp == 0 else kwargs.get("top_k", 40)
            return _GrammarFirst(self, chain, grammar, need)

    return CountingLlama


class _GrammarFirst:
    """What ``Llama.sample`` calls (``sample(ctx, idx)``): a chain, the grammar checked after."""

    def __init__(self, llm, chain, grammar, need: int):
        import llama_cpp

        self._chain = chain  # llama-cpp-python's LlamaSampler: frees its own chain
        vocab = llm._model.vocab
        g = batching.grammar_sampler(vocab, grammar._grammar, grammar._root)
        self.sampler = batching.Sampler(
            chain.sampler, g, llama_cpp.llama_vocab_n_tokens(vocab), owns_chain=False, need=need
        )

    def sample(self, ctx, idx: int = -1) -> int:
        return self.sampler.sample(ctx.ctx, idx)

    def close(self) -> None:
        self.sampler.free()
        self._chain.close()

    __del__ = close


@dataclass(eq=False)
class LoadedModel:
    """One loaded GGUF and what charlite keeps beside it, shared by every backend over it."""

    llm: Any
    """The ``llama_cpp.Llama`` (a :func:`_counting_llama`)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while one call generates on the shared context."""
    adapters: dict[str, Any] = field(default_factory=dict)
    """Adapter path -> llama.cpp adapter handle, loaded once."""
    active: str | None = None
    """The adapter applied on the context now (its path), or None."""
    stash: dict[str | None, tuple[list[int], bytes]] = field(default_factory=dict)
    """Adapter -> (tokens, state) evaluated under it, kept across hot-swaps."""
    engine: Any = None
    """The :class:`~charlite.backends.batching.BatchEngine` once batching is enabled."""

    def free_adapters(self) -> None:
        import llama_cpp

        with contextlib.suppress(Exception):
            llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                llama_cpp.llama_adapter_lora_free(adapter)
        self.adapters.clear()
        self.active = None
        self.stash.clear()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.free_adapters()
        with contextlib.suppress(Exception):
            self.llm.close()


def load_llama(
    path: Path, n_ctx: int = DEFAULT_CTX, verbose: bool = False, n_threads: int | None = None
) -> LoadedModel:
    """A cached loaded model for this file, checked before llama.cpp opens it.

    Adapters are not part of the load: they are applied per backend with
    :meth:`LlamaCppBackend.set_adapter`, so characters sharing a base share one loaded model.
    """
    info = check_gguf(path)
    if info.file_type == "adapter":
        raise ModelError(
            f"{path} is a LoRA adapter, not a model",
            hint="pass the base model and the adapter separately",
        )
    key = (str(Path(path).resolve()), n_ctx)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            llama_class = _counting_llama()
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ModelError(
                f"llama-cpp-python is not importable: {exc}", hint="pip install llama-cpp-python"
            ) from None
        if not verbose:
            _silence_llama_log()
        try:
            with quiet_native(not verbose):
                llm = llama_class(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    verbose=verbose,
                    n_threads=n_threads or default_threads(),
                )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {path}: {exc}") from None
        _use_fallback_template(llm)
        _LOADED[key] = LoadedModel(llm)
        return _LOADED[key]


def _use_fallback_template(llm) -> None:
    """A GGUF without a chat template (a base model, under an adapter-only export) is asked
    with the fallback template training used for it (:mod:`charlite.chat_templates`)."""
    if llm.metadata.get("tokenizer.chat_template"):
        return

    def has_token(text: str) -> bool:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return len(ids) == 1 and llm._model.token_get_text(ids[0]) == text

    template = fallback_for_vocab(has_token)
    llm.metadata["tokenizer.chat_template"] = template
    set_chat_handler(llm, template)


def set_chat_handler(llm, template: str) -> None:
    """Have ``llm`` format its chats with the Jinja ``template`` (its own BOS/EOS filled in)."""
    from llama_cpp import llama_chat_format

    eos, bos = llm.token_eos(), llm.token_bos()
    llm.chat_handler = llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    ).to_chat_handler()


def unload_all() -> None:
    with _LOCK:
        for loaded in _LOADED.values():
            loaded.close()
        _LOADED.clear()


@atexit.register
def _unload_at_exit() -> None:
    """Free the models while llama_cpp can still do it, not from ``Llama.__del__`` once the
    interpreter has torn its modules down; never wait long on a thread still loading one."""
    if _LOCK.acquire(timeout=2):
        _LOCK.release()
        unload_all()


class LlamaCppBackend(Backend):
    """A local GGUF through llama.cpp, optionally with a LoRA adapter.

    Backends over the same base file share one loaded model; switching the adapter swaps a few
    MB on the context instead of reloading (adapter hot-swap). One call generates at a time.
    """

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
        self.verbose = verbose
        self.loaded = load_llama(self.path, n_ctx, verbose)
        self.llm = self.loaded.llm
        self.n_ctx = self.llm.n_ctx()
        self.lora: Path | None = None
        self.set_adapter(lora)
        self._formatter = None
        self._engine = None  # a BatchEngine once batching is enabled
        self._prefix_lens: dict[str, int] = {}
        self._grammars: dict[str, str] = {}

    # -- adapters -------------------------------------------------------------------------------

    def set_adapter(self, lora: Path | None) -> None:
        """Use ``lora`` (a GGUF LoRA for this base) from now on, or none."""
        if lora is not None:
            lora = Path(lora).resolve()
            check_adapter_matches_base(lora, self.path)
            self._adapter_handle(lora)
        self.lora = lora

    def _adapter_handle(self, lora: Path):
        import llama_cpp

        handles = self.loaded.adapters
        if str(lora) not in handles:
            with quiet_native(not self.verbose):
                handle = llama_cpp.llama_adapter_lora_init(
                    self.llm._model.model, str(lora).encode()
                )
            if not handle:
                raise ModelError(f"llama.cpp could not load the adapter {lora}")
            handles[str(lora)] = handle
        return handles[str(lora)]

    def _activate(self) -> None:
        """Make this backend's adapter the one applied on the shared context."""
        import llama_cpp

        want = str(self.lora) if self.lora else None
        if self.loaded.active == want:
            return
        self._stash_kv()
        if want is None:
            rc = llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapter_handle(self.lora))
            scales = (ctypes.c_float * 1)(1.0)
            rc = llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, arr, 1, scales)
        if rc:
            raise ModelError(f"llama.cpp could not apply the adapter {want}")
        self.loaded.active = want
        self.llm.reset()  # the cached KV was computed with other weights
        self._unstash_kv(want)

    def _stash_kv(self) -> None:
        """Keep the evaluated state of the adapter being switched away from (a few, bounded).

        Switching back (``/switch``, ``serve`` alternating characters) then restores it and
        evaluates only what is new, instead of the whole prompt under the new weights.
        """
        n = int(self.llm.n_tokens)
        if not n:
            return
        stash = self.loaded.stash
        key = self.loaded.active
        stash.pop(key, None)
        state = self._state_bytes()
        if len(state) > STASH_MAX_BYTES:
            return
        stash[key] = (self.llm.input_ids[:n].tolist(), state)
        while len(stash) > STASH_ENTRIES or sum(len(v[1]) for v in stash.values()) > (
            STASH_MAX_BYTES
        ):
            stash.pop(next(iter(stash)))

    def _unstash_kv(self, key: str | None) -> None:
        entry = self.loaded.stash.pop(key, None)
        if entry is not None:
            self._restore(*entry)

    # -- generation -----------------------------------------------------------------------------

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
        if self._engine is not None:
            yield from self.submit(messages, params)
            return
        with self._gen_lock, _request_errors(self.n_ctx):
            self._activate()
            chunks = self.llm.create_chat_completion(
                messages=list(messages), stream=True, **self._kwargs(params)
            )
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content") or ""
                reason = choice.get("finish_reason")
                if text or reason:
                    yield Delta(text, reason)

    def complete(self, messages, params=None, schema=None) -> Completion:
        if self._engine is not None:
            return self.submit(messages, params, schema).result()
        kwargs = self._kwargs(params)
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        with self._gen_lock, _request_errors(self.n_ctx):
            self._activate()
            out = self.llm.create_chat_completion(messages=list(messages), **kwargs)
        return _completion(out)

    # -- continuous batching (charlite.backends.batching) ----------------------------------------

    def batching(self, parallel: int | None = None):
        """The batch engine over this backend's loaded model, made on first use.

        Backends over the same loaded model share one engine. ``parallel`` defaults to
        :func:`~charlite.backends.batching.parallel_setting` (``CHARLITE_PARALLEL``).
        """
        with _LOCK:
            engine = self.loaded.engine
            if parallel is None:
                if engine is not None:
                    return engine
                parallel, _ = self.parallel_setting()
            if engine is not None and (engine.parallel == parallel or engine.busy()):
                return engine
            if engine is not None:
                engine.close()
            engine = batching.BatchEngine(
                self.llm, parallel, self.n_ctx, n_threads=self.llm.context_params.n_threads
            )
            self.loaded.engine = engine
            return engine

    def parallel_setting(self) -> tuple[int, str]:
        """(sequences decoded together, where the number comes from)."""
        per_token = batching.model_kv_bytes_per_token(self.llm._model.model)
        return batching.parallel_setting(self.n_ctx, per_token)

    def enable_batching(self, parallel: int | None = None) -> int:
        """Route complete and stream through the shared batch from now on.

        Calls from several threads then decode together instead of one after another. Returns
        the number of parallel sequences.
        """
        self._engine = self.batching(parallel)
        return self._engine.parallel

    def submit(self, messages: Messages, params: GenParams | None = None, schema=None):
        """Queue one reply on the batch engine; iterate the handle for deltas (thread-safe)."""
        engine = self._engine
        if engine is None or engine.closed:  # resized by another user of the model: rejoin
            engine = self.batching()
            if self._engine is not None:
                self._engine = engine
        messages = list(messages)
        request = batching.BatchRequest(
            tokens=self.prompt_tokens(messages),
            params=params or GenParams(),
            grammar=self._grammar(schema) if schema is not None else None,
            prefix_len=self._shared_prefix_len(messages),
            adapter=(str(self.lora), self._adapter_handle(self.lora)) if self.lora else None,
        )
        return engine.submit(request)

    def complete_many(self, requests) -> list:
        """Replies to many ``(messages, params, schema)`` at once, decoded together.

        Each item is a :class:`Completion`, or the :class:`CharliteError` of a request that
        failed (a prompt that does not fit), so one bad request does not sink the others.
        """
        handles = []
        for messages, params, schema in requests:
            try:
                handles.append(self.submit(messages, params, schema))
            except CharliteError as exc:
                handles.append(exc)
        out = []
        for h in handles:
            if isinstance(h, CharliteError):
                out.append(h)
                continue
            try:
                out.append(h.result())
            except CharliteError as exc:
                out.append(exc)
        return out

    def _shared_prefix_len(self, messages: list) -> int:
        if not messages or messages[0].get("role") != "system":
            return 0
        system = messages[0].get("content") or ""
        if system not in self._prefix_lens:
            if len(self._prefix_lens) > 64:
                self._prefix_lens.clear()
            self._prefix_lens[system] = len(self.persona_prefix(system))
        return self._prefix_lens[system]

    def _grammar(self, schema: dict) -> str:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = batching.schema_grammar(schema)
        return self._grammars[key]

    @property
    def _gen_lock(self) -> threading.Lock:
        return self.loaded.lock

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # -- prompt tokens and the persona prefix cache ---------------------------------------------

    def prompt_tokens(self, messages: Messages) -> list[int]:
        """The tokens llama-cpp-python evaluates for ``messages`` (with the generation prompt)."""
        if self._formatter is None:
            from llama_cpp import llama_chat_format

            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ModelError(f"{self.path.name} has no chat template")
            model = self.llm._model
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
            # _bos first: another thread may read both once _formatter is set
            self._bos = [bos] if bos != -1 and model.add_bos_token() else []
            self._formatter = formatter
        text = self._formatter(messages=list(messages)).prompt
        return self._bos + self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def persona_prefix(self, system: str) -> list[int]:
        """The tokens every conversation with this system message starts with."""
        a = self.prompt_tokens(
            [{"role": "system", "content": system}, {"role": "user", "content": "A"}]
        )
        b = self.prompt_tokens(
            [{"role": "system", "content": system}, {"role": "user", "content": "Z"}]
        )
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return a[:n]

    def prime(self, system: str, cache=None) -> str:
        """Get the context ready to continue after ``system``: "warm", "restored" or "evaluated".

        With a :class:`~charlite.persona_cache.PersonaCache`, a saved state is restored when
        there is one, and saved after evaluating when there is not.
        """
        with self._gen_lock:
            self._activate()
            prefix = self.persona_prefix(system)
            if not prefix or len(prefix) >= self.n_ctx - 8:
                return "evaluated"
            current = self.llm.input_ids[: self.llm.n_tokens].tolist()
            if current[: len(prefix)] == prefix:
                return "warm"
            key = None
            if cache is not None:
                key = cache_key(self.path, self.lora, prefix)
                entry = cache.load(key)
                if entry is not None and entry.tokens == prefix:
                    if self._restore(entry.tokens, entry.state):
                        return "restored"
            self.llm.reset()
            self.llm.eval(prefix)
            if cache is not None and key is not None:
                cache.save(key, prefix, self._state_bytes())
            return "evaluated"

    def _state_bytes(self) -> bytes:
        import llama_cpp

        ctx = self.llm._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buf = (ctypes.c_uint8 * int(size))()
        n = llama_cpp.llama_state_get_data(ctx, buf, size)
        return bytes(buf[: int(n)])

    def _restore(self, tokens: list[int], state: bytes) -> bool:
        import llama_cpp
        import numpy as np

        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_set_data(self.llm._ctx.ctx, buf, len(state)) != len(state):
            self.llm.reset()
            return False
        n = len(tokens)
        self.llm.input_ids[:n] = np.asarray(tokens, dtype=np.intc)
        self.llm.n_tokens = n
        self.llm._requires_eval = True
        return True

    def describe(self) -> str:
        base = f"{self.spec} ({self.path.name})" if self.spec.kind == "gguf" else str(self.spec)
        return f"{base} + {self.lora.name}" if self.lora else base


@contextlib.contextmanager
def _request_errors(n_ctx: int) -> Iterator[None]:
    """What llama-cpp-python raises for one request, as the typed errors of every backend.

    A prompt longer than the context is a bare ValueError there; a failed decode a
    RuntimeError. Both fail this request only (:class:`~charlite.errors.RequestError`).
    """
    try:
        yield
    except ValueError as exc:
        if "context window" in str(exc):
            raise PromptTooLongError(
                f"the prompt is longer than the model's context ({n_ctx} tokens)",
                hint="send a shorter message",
            ) from None
        raise
    except RuntimeError as exc:
        raise RequestError(f"llama.cpp failed on this request: {exc}") from None


def _completion(out: dict) -> Completion:
    choice = out["choices"][0]
    usage = out.get("usage") or {}
    return Completion(
        text=choice["message"].get("content") or "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )

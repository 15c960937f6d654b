"""Continuous batching: many sequences decoding together on one loaded llama.cpp model.

Decoding on a CPU or GPU is bound by memory bandwidth: every token reads all the weights once.
A :class:`BatchEngine` decodes up to ``parallel`` sequences in one ``llama_decode`` call, so the
weights are read once for all of them, as llama.cpp's ``--parallel`` server and vLLM do.

- Each sequence has its own KV cells (a llama.cpp sequence id), its own sampler chain (seed,
  temperature, top-p, repeat penalty, optional GBNF grammar from a JSON schema), stop strings
  and token budget.
- A finished or cancelled sequence frees its slot at once and a waiting request takes it
  (continuous batching). A new prompt is evaluated between two decode steps of the others, in
  its own calls and the same chunks as when it is alone: with a KV stream per sequence, what a
  sequence computes never depends on its neighbours, so with temperature 0 its text is the one
  it gives alone (tests/test_batching.py checks it).
- A system prefix several requests start with is evaluated once into a spare sequence and
  copied (``llama_memory_seq_cp``) into each new slot that starts with it.
- A prompt that does not fit a sequence's share of the context fails alone with one clear
  error; the other sequences go on.

The engine runs on the weights the backend has already loaded (no second copy of the model,
no other process): it owns a second ``llama_context`` on the same ``llama_model``, sized for
``parallel`` sequences, so the single-sequence chat path keeps its own KV cache, persona cache
and adapter state untouched. One scheduler thread drives the context; any thread may submit.

>>> # engine = backend.batching(4)
>>> # [c.text for c in engine.complete_many([BatchRequest(tokens, GenParams(seed=1))] * 4)]
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from charlite.backends.base import Batching, Completion, Delta, GenParams
from charlite.errors import CharliteError, ContextFullError, ModelError, PromptTooLongError

ENV_PARALLEL = "CHARLITE_PARALLEL"
DEFAULT_MAX_PARALLEL = 4  # llama.cpp's server default; beyond it a CPU gains little
HARD_MAX_PARALLEL = 64
KV_MEMORY_SHARE = 0.25  # of the available memory, at most, for the batch's KV cache
PREFIX_SEQS = 2  # spare sequences that hold shared system prefixes
MIN_SHARED_PREFIX = 16  # shorter prefixes are cheaper to evaluate than to track
PENALTY_LAST_N = 64  # llama-cpp-python's default last_n_tokens_size: same sampling as chat
N_BATCH = 512
GRAMMAR_FAST_PATH = True  # sample without the grammar, check only the chosen token (see Sampler)
BEST_CANDIDATES = 2048  # a rejected choice is resampled among these first (see Sampler)
TOP_K = 40  # llama-cpp-python's default top_k, in the chain when sampling
NEGLIGIBLE_LOGIT = 10.0  # e^-10: a candidate this far below the best is never drawn in practice


# -- the setting: how many sequences -------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes of memory available now (physical when the platform cannot say), or None."""
    for name in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            pages = os.sysconf(name)
            size = os.sysconf("SC_PAGE_SIZE")
            if pages > 0 and size > 0:
                return pages * size
    return None


def kv_bytes_per_token(n_layer: int, n_embd: int, n_head: int, n_head_kv: int) -> int:
    """Bytes of f16 K and V cache one token takes in every layer."""
    head_dim = n_embd // max(1, n_head)
    return n_layer * 2 * max(1, n_head_kv) * head_dim * 2


def default_parallel(n_ctx: int, kv_per_token: int | None, memory: int | None = None) -> int:
    """Sequences to decode together: llama.cpp's default of 4, fewer when memory is short.

    Each sequence may hold ``n_ctx`` tokens of KV cache; all of them together may use at most a
    quarter of the available memory.
    """
    memory = available_memory() if memory is None else memory
    n = DEFAULT_MAX_PARALLEL
    if kv_per_token and memory:
        per_seq = max(1, n_ctx) * kv_per_token
        n = min(n, int(memory * KV_MEMORY_SHARE // per_seq))
    return max(1, n)


def parallel_setting(n_ctx: int, kv_per_token: int | None) -> tuple[int, str]:
    """(number of parallel sequences, where it came from): ``CHARLITE_PARALLEL`` or the default."""
    raw = os.environ.get(ENV_PARALLEL, "").strip()
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= HARD_MAX_PARALLEL:
            raise ModelError(
                f"{ENV_PARALLEL}={raw!r} is not a number of sequences",
                hint=f"set it to a whole number from 1 to {HARD_MAX_PARALLEL}, or unset it",
            )
        return int(raw), ENV_PARALLEL
    return default_parallel(n_ctx, kv_per_token), f"default for a {n_ctx}-token context"


def gguf_kv_bytes_per_token(kv: dict) -> int | None:
    """:func:`kv_bytes_per_token` from a GGUF header's key-values (None when they are missing)."""
    arch = kv.get("general.architecture")
    try:
        n_head = int(kv[f"{arch}.attention.head_count"])
        return kv_bytes_per_token(
            int(kv[f"{arch}.block_count"]),
            int(kv[f"{arch}.embedding_length"]),
            n_head,
            int(kv.get(f"{arch}.attention.head_count_kv", n_head)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def model_kv_bytes_per_token(model_ptr) -> int:
    import llama_cpp

    return kv_bytes_per_token(
        llama_cpp.llama_model_n_layer(model_ptr),
        llama_cpp.llama_model_n_embd(model_ptr),
        llama_cpp.llama_model_n_head(model_ptr),
        llama_cpp.llama_model_n_head_kv(model_ptr),
    )


# -- requests and their handles -------------------------------------------------------------------


@dataclass
class BatchRequest:
    """One sequence to decode: its prompt tokens and how to sample its continuation.

    ``grammar`` is GBNF text (see :func:`schema_grammar`); ``prefix_len`` says how many leading
    tokens are a prefix other requests share (a character's system message), worth keeping.
    ``adapter`` is ``(key, llama_adapter_lora_p)`` or None; requests with different adapters
    never share a batch.
    """

    tokens: Sequence[int]
    params: GenParams = GenParams()
    grammar: str | None = None
    prefix_len: int = 0
    adapter: tuple[str, Any] | None = None


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF text for a JSON schema (llama-cpp-python's converter)."""
    import json

    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar


class Handle:
    """A submitted request: iterate it for :class:`Delta` pieces, or call :meth:`result`.

    Closing the iteration early (a client that went away) or :meth:`cancel` frees the slot.
    """

    def __init__(self, engine: BatchEngine, request: BatchRequest):
        self.engine = engine
        self.request = request
        self.cancelled = False
        self.submitted = time.monotonic()
        self.first_token_at: float | None = None
        self.prompt_tokens = len(request.tokens)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._done = False

    # called by the scheduler thread
    def _put(self, item: Delta | BaseException | None) -> None:
        self._out.put(item)

    def cancel(self) -> None:
        if not self._done:
            self.cancelled = True
            self.engine._wake()

    def __iter__(self) -> Iterator[Delta]:
        try:
            while True:
                item = self._out.get()
                if item is None:
                    self._done = True
                    return
                if isinstance(item, BaseException):
                    self._done = True
                    raise item
                yield item
        finally:
            if not self._done:
                self.cancel()

    def result(self) -> Completion:
        text = [d.text for d in self]
        return Completion(
            "".join(text),
            self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )


# -- sampling: the chain first, the grammar checked on its choice ---------------------------------


class Sampler:
    """A llama.cpp sampler chain and an optional GBNF grammar, sampled as ``common_sampler`` does.

    Applying a grammar tests every candidate of the vocabulary (~49k tokens) against the
    grammar's stacks: 15-17 ms of CPU per token here, against 0.4 ms for the rest of the chain,
    and it does not shrink in a batch. So, as llama.cpp's own ``common_sampler_sample``: the
    chain samples without the grammar, and only the token it chose is tested against it; when
    the grammar rejects it, the grammar is applied to all the candidates and the chain samples
    again. The grammar and the chain then accept the token.

    That second pass is itself cut short when it can be: the chain only ever looks at the
    ``need`` best allowed candidates (1 when greedy, ``top_k`` when sampling), so the grammar is
    first applied to the :data:`BEST_CANDIDATES` best by logit; when at least ``need`` of them
    are allowed and beat (after the repeat penalty) every candidate outside them, the chain
    samples from those, which selects what the whole-vocabulary pass would. When sampling
    (``need`` > 1) it also samples from those when every candidate outside them is
    :data:`NEGLIGIBLE_LOGIT` below the best allowed one (at most e^-10 of its probability each:
    they could only move top-p's cut by that much). Otherwise (or ``need`` 0: an unknown chain)
    the whole vocabulary is checked.

    With temperature 0 the token is the one the full pass gives (an allowed argmax is the
    argmax of the allowed tokens). With temperature > 0 an allowed first draw is kept, so the
    distribution is not exactly the full pass's (llama.cpp makes the same trade).
    ``fast=False`` (or :data:`GRAMMAR_FAST_PATH` off) keeps the grammar inside the chain,
    applied to every candidate: llama-cpp-python's order.
    """

    def __init__(
        self, chain, grammar=None, n_vocab: int = 0, owns_chain: bool = True, need: int = 0
    ):
        self.chain, self.grammar, self.owns_chain = chain, grammar, owns_chain
        self.need = need
        self.tokens = 0  # tokens sampled with the grammar checked on the first choice
        self.resampled = 0  # of them, first choices the grammar rejected
        self.resampled_full = 0  # of those, resampled over the whole vocabulary
        if grammar is not None:
            self._cand = _Candidates(n_vocab)
            self._penalties = _find(chain, b"penalties")

    def sample(self, ctx, idx: int) -> int:
        import llama_cpp

        if self.grammar is None:
            return llama_cpp.llama_sampler_sample(self.chain, ctx, idx)
        self.tokens += 1
        cand = self._cand
        token = cand.choose(self.chain, ctx, idx)
        if not cand.allowed(self.grammar, token):
            self.resampled += 1
            token = cand.choose_among_best(
                self.chain, self.grammar, self._penalties, ctx, idx, self.need
            )
            if token is None:
                self.resampled_full += 1
                token = cand.choose(self.chain, ctx, idx, first=self.grammar)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def free(self) -> None:
        import llama_cpp

        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None
        if self.chain is not None and self.owns_chain:
            llama_cpp.llama_sampler_free(self.chain)
        self.chain = None


def _find(chain, name: bytes):
    """The sampler called ``name`` in ``chain``, or None."""
    import llama_cpp

    for i in range(llama_cpp.llama_sampler_chain_n(chain)):
        smpl = llama_cpp.llama_sampler_chain_get(chain, i)
        if llama_cpp.llama_sampler_name(smpl) == name:
            return smpl
    return None


class _Candidates:
    """A reusable ``llama_token_data_array`` over the vocabulary, filled from a row of logits."""

    def __init__(self, n_vocab: int):
        import llama_cpp
        import numpy as np

        self.n_vocab = n_vocab
        self.data = (llama_cpp.llama_token_data * n_vocab)()
        self.view = np.frombuffer(
            self.data, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        )
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.array = llama_cpp.llama_token_data_array(self.data, n_vocab, -1, False)
        self.sub = (llama_cpp.llama_token_data * BEST_CANDIDATES)()
        self.sub_view = np.frombuffer(self.sub, dtype=self.view.dtype)
        self.sub_array = llama_cpp.llama_token_data_array(self.sub, 0, -1, False)
        self.one = (llama_cpp.llama_token_data * 1)()
        self.one_array = llama_cpp.llama_token_data_array(self.one, 1, -1, False)

    def choose(self, chain, ctx, idx: int, first=None) -> int:
        """The token ``chain`` selects from the logits of output ``idx`` (``first`` applied first)."""
        import llama_cpp
        import numpy as np

        logits = llama_cpp.llama_get_logits_ith(ctx, idx)
        if not logits:
            raise ModelError(f"llama.cpp has no logits for output {idx}")
        view = self.view
        view["id"] = self.ids
        view["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        view["p"] = 0.0
        arr = self.array
        arr.size, arr.selected, arr.sorted = self.n_vocab, -1, False
        ref = ctypes.byref(arr)
        if first is not None:
            llama_cpp.llama_sampler_apply(first, ref)
        llama_cpp.llama_sampler_apply(chain, ref)
        if not 0 <= arr.selected < arr.size:
            raise ModelError("llama.cpp's sampler chain selected no token")
        return int(self.data[arr.selected].id)

    def choose_among_best(self, chain, grammar, penalties, ctx, idx: int, need: int) -> int | None:
        """What ``chain`` selects after ``grammar``, deciding from the best candidates only.

        None when the :data:`BEST_CANDIDATES` best do not hold ``need`` allowed ones that beat
        every other candidate: then only the whole vocabulary can say.
        """
        import llama_cpp
        import numpy as np

        n_best = min(BEST_CANDIDATES, self.n_vocab - 1)
        if need <= 0 or need > n_best:
            return None
        raw = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, idx), (self.n_vocab,))
        part = np.argpartition(-raw, n_best)
        best = np.sort(part[:n_best])  # in token order, as in the whole array
        outside = raw[part[n_best]]  # the best logit of the rest; a penalty only lowers it
        sub, arr = self._sub(best, raw[best])
        if penalties is not None:
            llama_cpp.llama_sampler_apply(penalties, ctypes.byref(arr))
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(arr))
        view = self.sub_view[: arr.size]
        ok = view["logit"] != -np.inf
        if not ok.any():
            return None
        # the `need` best allowed are all here, or anything outside is too unlikely to matter
        top = float(view["logit"][ok].max())
        enough = int(np.count_nonzero(ok & (view["logit"] > outside))) >= need
        if not enough and (need == 1 or outside > top - NEGLIGIBLE_LOGIT):
            return None
        keep = best[ok]
        sub, arr = self._sub(keep, raw[keep])  # the chain applies the penalty itself
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(arr))
        if not 0 <= arr.selected < arr.size:
            return None
        return int(sub[arr.selected].id)

    def _sub(self, ids, logits):
        view = self.sub_view[: len(ids)]
        view["id"], view["logit"], view["p"] = ids, logits, 0.0
        arr = self.sub_array
        arr.size, arr.selected, arr.sorted = len(ids), -1, False
        return self.sub, arr

    def allowed(self, grammar, token: int) -> bool:
        import llama_cpp

        one = self.one[0]
        one.id, one.logit, one.p = token, 1.0, 0.0
        arr = self.one_array
        arr.size, arr.selected, arr.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(arr))
        return one.logit != float("-inf")


# -- the engine ----------------------------------------------------------------------------------


class _Slot:
    __slots__ = (
        "seq", "handle", "pending", "pos", "chain", "last", "decoder", "text", "sent", "stops",
        "n_gen",
    )  # fmt: skip

    def __init__(self, seq: int):
        self.seq = seq
        self.handle: Handle | None = None
        self.chain = None

    def start(self, handle: Handle, pending: list[int], pos: int, chain) -> None:
        self.handle, self.pending, self.pos, self.chain = handle, pending, pos, chain
        self.last: int | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.sent = "", 0
        self.stops = tuple(s for s in handle.request.params.stop if s)
        self.n_gen = 0


class _Prefix:
    __slots__ = ("seq", "tokens", "used")

    def __init__(self, seq: int):
        self.seq = seq
        self.tokens: tuple[int, ...] = ()
        self.used = 0.0


class BatchEngine:
    """Up to ``parallel`` sequences decoding together on ``llm``'s model (see the module doc)."""

    def __init__(self, llm, parallel: int, n_ctx_seq: int, n_threads: int | None = None):
        import llama_cpp

        if parallel < 1:
            raise ModelError("the number of parallel sequences must be at least 1")
        self.llm = llm
        self.parallel = parallel
        self.n_ctx_seq = n_ctx_seq
        self.model = llm._model.model
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        # a stream of n_ctx_seq cells for every slot and every cached prefix
        params.n_ctx = n_ctx_seq * (parallel + PREFIX_SEQS)
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_seq_max = parallel + PREFIX_SEQS
        # one KV stream per sequence: attention over a sequence's own cells only, laid out as
        # when it decodes alone (and faster than one shared buffer when prefixes differ)
        params.kv_unified = False
        params.embeddings = False
        if n_threads:
            params.n_threads = params.n_threads_batch = n_threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise ModelError(
                f"llama.cpp could not make a context for {parallel} sequences",
                hint=f"set {ENV_PARALLEL} lower",
            )
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self._piece = ctypes.create_string_buffer(256)
        self.slots = [_Slot(i) for i in range(parallel)]
        self.prefixes = [_Prefix(parallel + i) for i in range(PREFIX_SEQS)]
        self.adapter: str | None = None
        self.evaluated = 0  # tokens through llama_decode (benchmarks, tests)
        self.decode_seconds = 0.0
        # decode steps by their number of rows: rows -> [steps, wall s, CPU s of this thread];
        # with one llama.cpp thread the CPU time is the kernel's cost whatever the load
        self.step_times: dict[int, list] = {}
        self.sample_cpu_seconds = 0.0  # sampler chains, on the scheduler thread
        self.grammar_tokens = 0  # tokens sampled under a grammar (finished requests)
        self.grammar_resampled = 0  # of them, first choices the grammar rejected
        self.grammar_resampled_full = 0  # of those, resampled over the whole vocabulary
        self.prompt_cpu_seconds = 0.0  # prompt chunks through llama_decode
        self.loop_cpu_seconds = 0.0  # everything the scheduler thread did, decode included
        self.cancelled = 0  # requests dropped by their caller (a client that hung up)
        self.steps = 0
        self._waiting: list[Handle] = []
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="charlite-batch", daemon=True)
        self._thread.start()

    # -- public API ---------------------------------------------------------------------------

    def submit(self, request: BatchRequest) -> Handle:
        """Queue ``request``; a free slot takes it at the next step. Thread-safe."""
        handle = Handle(self, request)
        with self._cv:
            if self._closing:
                raise ModelError("the batch engine is closed")
            self._waiting.append(handle)
            self._cv.notify()
        return handle

    def complete_many(self, requests: Sequence[BatchRequest]) -> list[Completion | CharliteError]:
        """Every request's completion, in order; a request that failed gives its error."""
        handles = [self.submit(r) for r in requests]
        out: list[Completion | CharliteError] = []
        for h in handles:
            try:
                out.append(h.result())
            except CharliteError as exc:
                out.append(exc)
        return out

    @property
    def closed(self) -> bool:
        return self._closing

    def busy(self) -> int:
        """Requests decoding or waiting."""
        with self._cv:
            return len(self._waiting) + sum(s.handle is not None for s in self.slots)

    def close(self) -> None:
        import llama_cpp

        with self._cv:
            if self._closing:
                return
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        for slot in self.slots:
            if slot.handle is not None:
                self._finish(slot, error=ModelError("the model was unloaded"))
        for h in self._waiting:
            h._put(ModelError("the model was unloaded"))
        self._waiting.clear()
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        self.ctx = None

    # -- the scheduler ------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closing and not self._waiting and not self._active():
                    self._cv.wait()
                if self._closing:
                    return
                waiting = self._waiting
            cpu = time.thread_time()
            try:
                self._drop_cancelled()
                self._admit(waiting)
                if self._active():
                    self._step()
            except Exception as exc:  # pragma: no cover - a native failure: fail, keep serving
                error = exc if isinstance(exc, CharliteError) else ModelError(f"llama.cpp: {exc}")
                for slot in self.slots:
                    if slot.handle is not None:
                        self._finish(slot, error=error)
            self.loop_cpu_seconds += time.thread_time() - cpu

    def _active(self) -> bool:
        return any(s.handle is not None for s in self.slots)

    def _drop_cancelled(self) -> None:
        with self._cv:
            gone = [h for h in self._waiting if h.cancelled]
            self._waiting[:] = [h for h in self._waiting if not h.cancelled]
        for h in gone:
            h.finish_reason = "cancelled"
            self.cancelled += 1
            h._put(None)
        for slot in self.slots:
            if slot.handle is not None and slot.handle.cancelled:
                self._finish(slot, "cancelled")

    def _admit(self, waiting: list[Handle]) -> None:
        for slot in self.slots:
            if slot.handle is not None:
                continue
            with self._cv:
                if not waiting:
                    return
                handle = waiting[0]
                key = handle.request.adapter[0] if handle.request.adapter else None
                if key != self.adapter:
                    if self._active():
                        return  # let the sequences on the other weights finish first
                    self._set_adapter(handle.request.adapter)
                waiting.pop(0)
            self._start(slot, handle)

    def _set_adapter(self, adapter: tuple[str, Any] | None) -> None:
        import llama_cpp

        if adapter is None:
            rc = llama_cpp.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter[1])
            scales = (ctypes.c_float * 1)(1.0)
            rc = llama_cpp.llama_set_adapters_lora(self.ctx, arr, 1, scales)
        if rc:
            raise ModelError(f"llama.cpp could not apply the adapter {adapter and adapter[0]}")
        self.adapter = adapter[0] if adapter else None
        llama_cpp.llama_memory_clear(self.mem, True)  # KV computed with other weights
        for p in self.prefixes:
            p.tokens = ()

    def _start(self, slot: _Slot, handle: Handle) -> None:
        import llama_cpp

        req = handle.request
        tokens = list(req.tokens)
        if not tokens:
            handle._put(ModelError("empty prompt"))
            return
        if len(tokens) >= self.n_ctx_seq:
            handle._put(
                PromptTooLongError(
                    f"the prompt ({len(tokens)} tokens) is longer than the model's context "
                    f"({self.n_ctx_seq} tokens per sequence)",
                    hint="send a shorter prompt",
                )
            )
            return
        try:
            chain = self._chain(req)
        except CharliteError as exc:
            handle._put(exc)
            return
        llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
        shared = self._reuse_prefix(slot.seq, tokens, req.prefix_len)
        slot.start(handle, tokens[shared:], shared, chain)

    def _reuse_prefix(self, seq: int, tokens: list[int], prefix_len: int) -> int:
        """Put the shared prefix of ``tokens`` into ``seq``; how many tokens it covers (or 0).

        A prefix is evaluated once into a spare sequence, then copied to each slot that starts
        with it, so the character's system message is not evaluated per request.
        """
        import llama_cpp

        if prefix_len < MIN_SHARED_PREFIX or prefix_len >= len(tokens):
            return 0
        key = tuple(tokens[:prefix_len])
        entry = next((p for p in self.prefixes if p.tokens == key), None)
        if entry is None:
            entry = min(self.prefixes, key=lambda p: (bool(p.tokens), p.used))
            llama_cpp.llama_memory_seq_rm(self.mem, entry.seq, -1, -1)
            entry.tokens = ()
            if not self._evaluate(entry.seq, list(key), 0, logits=False):
                llama_cpp.llama_memory_seq_rm(self.mem, entry.seq, -1, -1)
                return 0
            entry.tokens = key
        llama_cpp.llama_memory_seq_cp(self.mem, entry.seq, seq, -1, -1)
        entry.used = time.monotonic()
        return prefix_len

    def _evaluate(self, seq: int, tokens: list[int], pos: int, logits: bool) -> bool:
        """Decode prompt tokens of one sequence in chunks; logits for the last when asked."""
        import llama_cpp

        batch = self.batch
        for start in range(0, len(tokens), N_BATCH):
            chunk = tokens[start : start + N_BATCH]
            last = start + len(chunk) == len(tokens)
            for i, tok in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = pos + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = logits and last and i == len(chunk) - 1
            batch.n_tokens = len(chunk)
            t0, c0 = time.perf_counter(), time.thread_time()
            rc = llama_cpp.llama_decode(self.ctx, batch)
            self.decode_seconds += time.perf_counter() - t0
            self.prompt_cpu_seconds += time.thread_time() - c0
            if rc != 0:
                return False
            self.evaluated += len(chunk)
            self.steps += 1
        return True

    def _chain(self, req: BatchRequest) -> Sampler:
        """The sampler chain llama-cpp-python's ``Llama`` builds for the same settings.

        A grammar stays out of the chain and is checked on the chain's choice (:class:`Sampler`)
        unless :data:`GRAMMAR_FAST_PATH` is off.
        """
        import llama_cpp

        grammar = grammar_sampler(self.vocab, req.grammar) if req.grammar else None
        chain = sampler_chain(
            self.vocab, req.params, grammar=None if GRAMMAR_FAST_PATH else grammar
        )
        if not GRAMMAR_FAST_PATH:
            return Sampler(chain)
        need = 1 if req.params.temperature <= 0 else TOP_K
        return Sampler(chain, grammar, llama_cpp.llama_vocab_n_tokens(self.vocab), need=need)

    def _step(self) -> None:
        """One ``llama_decode`` of the next token of every decoding slot, then one chunk of a
        prompt (the oldest request's), so a long prompt does not stall the streams decoding.

        Each prompt is evaluated in its own calls, in the same chunks as when it is alone, and
        each sequence has its own KV stream: what a sequence computes does not depend on its
        neighbours, so with temperature 0 its text is the one it gives alone.
        """
        import llama_cpp

        batch = self.batch
        outputs: list[_Slot] = []
        for slot in self.slots:
            if slot.handle is not None and not slot.pending and slot.last is not None:
                i = len(outputs)
                batch.token[i] = slot.last
                batch.pos[i] = slot.pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = slot.seq
                batch.logits[i] = True
                outputs.append(slot)
        if outputs:
            batch.n_tokens = len(outputs)
            t0, c0 = time.perf_counter(), time.thread_time()
            rc = llama_cpp.llama_decode(self.ctx, batch)
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            self.decode_seconds += wall
            if rc != 0:
                self._decode_failed(rc, outputs)
                return
            self.evaluated += len(outputs)
            self.steps += 1
            stat = self.step_times.setdefault(len(outputs), [0, 0.0, 0.0])
            stat[0] += 1
            stat[1] += wall
            stat[2] += cpu
            for i, slot in enumerate(outputs):
                slot.pos += 1
                c0 = time.thread_time()
                token = slot.chain.sample(self.ctx, i)
                self.sample_cpu_seconds += time.thread_time() - c0
                self._accept(slot, token)
        prompts = [s for s in self.slots if s.handle is not None and s.pending]
        prompts = [s for s in prompts if not s.handle.cancelled]
        if prompts:  # one chunk of the oldest request's prompt: the decoding ones go on between
            slot = min(prompts, key=lambda s: s.handle.submitted)
            chunk, slot.pending = slot.pending[:N_BATCH], slot.pending[N_BATCH:]
            if not self._evaluate(slot.seq, chunk, slot.pos, logits=not slot.pending):
                self._decode_failed(1, [slot])
                return
            slot.pos += len(chunk)
            if slot.pending:
                return
            c0 = time.thread_time()
            token = slot.chain.sample(self.ctx, -1)
            self.sample_cpu_seconds += time.thread_time() - c0
            self._accept(slot, token)

    def _decode_failed(self, rc: int, slots: list[_Slot]) -> None:
        """No room for the batch: fail the longest sequence, the rest go on."""
        if rc == 1 and slots:
            slot = max(slots, key=lambda s: s.pos)
            self._finish(
                slot,
                error=ContextFullError(
                    f"the context is full ({self.n_ctx} tokens shared by {self.parallel} "
                    "sequences): this request did not fit",
                    hint=f"retry it, or set {ENV_PARALLEL} lower",
                ),
            )
            return
        error = ModelError(f"llama.cpp could not decode the batch (llama_decode returned {rc})")
        for slot in slots:
            self._finish(slot, error=error)

    def _accept(self, slot: _Slot, token: int) -> None:
        import llama_cpp

        handle = slot.handle
        assert handle is not None
        if handle.first_token_at is None:
            handle.first_token_at = time.monotonic()
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self._flush(slot, final=True)
            self._finish(slot, "stop")
            return
        slot.n_gen += 1
        handle.completion_tokens = slot.n_gen
        slot.text += slot.decoder.decode(self._token_bytes(token))
        if self._flush(slot, final=False):
            self._finish(slot, "stop")
            return
        if slot.n_gen >= handle.request.params.max_tokens or slot.pos + 1 >= self.n_ctx_seq:
            slot.text += slot.decoder.decode(b"", final=True)
            self._flush(slot, final=True)
            self._finish(slot, "length")
            return
        slot.last = token

    def _token_bytes(self, token: int) -> bytes:
        import llama_cpp

        buf = self._piece
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _flush(self, slot: _Slot, final: bool) -> bool:
        """Send the text that can no longer turn into a stop string; True when one was found."""
        text, start = slot.text, slot.sent
        if slot.stops:
            longest = max(len(s) for s in slot.stops)
            lo = max(0, start - longest)
            hits = [i for i in (text.find(s, lo) for s in slot.stops) if i >= 0]
            if hits:
                cut = min(hits)
                if cut > start:
                    slot.handle._put(Delta(text[start:cut]))
                slot.sent = cut
                slot.text = text[:cut]
                return True
            if not final:
                hold = 0
                for s in slot.stops:
                    for k in range(min(len(s) - 1, len(text)), 0, -1):
                        if text.endswith(s[:k]):
                            hold = max(hold, k)
                            break
                end = len(text) - hold
            else:
                end = len(text)
        else:
            end = len(text)
        if end > start:
            slot.handle._put(Delta(text[start:end]))
            slot.sent = end
        return False

    def _finish(
        self, slot: _Slot, reason: str | None = None, error: BaseException | None = None
    ) -> None:
        import llama_cpp

        handle = slot.handle
        slot.handle = None
        if slot.chain is not None:
            self.grammar_tokens += slot.chain.tokens
            self.grammar_resampled += slot.chain.resampled
            self.grammar_resampled_full += slot.chain.resampled_full
            slot.chain.free()
            slot.chain = None
        llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
        if handle is None:
            return
        if error is not None:
            handle._put(error)
            return
        handle.finish_reason = reason
        if reason == "cancelled":
            self.cancelled += 1
        else:
            handle._put(Delta("", reason))
        handle._put(None)


def _penalties(vocab, repeat: float):
    """The repeat-penalty sampler; some llama.cpp builds still take ``n_vocab`` first."""
    import inspect

    import llama_cpp

    init = llama_cpp.llama_sampler_init_penalties
    if "n_vocab" in inspect.signature(init).parameters:
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        return init(n_vocab, PENALTY_LAST_N, repeat, 0.0, 0.0)
    return init(PENALTY_LAST_N, repeat, 0.0, 0.0)


def grammar_sampler(vocab, grammar: str, root: str = "root"):
    """llama.cpp's sampler for the GBNF ``grammar`` (a JSON schema's), or a :class:`ModelError`
    when llama.cpp cannot parse it."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(
        vocab, grammar.encode("utf-8"), root.encode("utf-8")
    )
    if not sampler:
        raise ModelError("llama.cpp could not parse the grammar of the JSON schema")
    return sampler


def sampler_chain(vocab, p: GenParams, grammar=None):
    """llama-cpp-python's chain for ``p`` (``grammar``, a sampler, goes in after the penalties)."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    add(chain, _penalties(vocab, p.repeat_penalty))
    if grammar is not None:
        add(chain, grammar)
    if p.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
    else:
        seed = llama_cpp.LLAMA_DEFAULT_SEED if p.seed is None else p.seed & 0xFFFFFFFF
        add(chain, llama_cpp.llama_sampler_init_top_k(TOP_K))
        add(chain, llama_cpp.llama_sampler_init_typical(1.0, 1))
        add(chain, llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_min_p(0.05, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(p.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


# -- callers: several calls at once, results in order ----------------------------------------------


def concurrency(backend, parallel: int | None = None) -> int:
    """How many calls to make to ``backend`` at once: its batch size once batching is on, else 1.

    A :class:`~charlite.backends.base.Batching` backend (llama.cpp) starts routing its calls
    through the shared batch; other backends answer one call at a time here.
    """
    if isinstance(backend, Batching):
        return backend.enable_batching(parallel)
    return 1


def ordered_map(fn, items: Sequence, workers: int) -> Iterator:
    """``fn(item)`` for every item, ``workers`` at a time, yielded in the items' order.

    With one worker it is a plain loop. If the consumer stops (an error, Ctrl-C), calls not yet
    started are dropped.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="charlite-call")
    pending: deque = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:  # a few queued: a slow head does not idle the rest
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


_END = object()

"""Wall time of one chat turn through charlite vs a direct llama-cpp-python call.

Both run in this process on the same loaded ``Llama`` (the embedded model) with the same
messages and sampling parameters (temperature 0, fixed seed), so they generate the same
tokens. Before every call the context is reset, so both evaluate the whole prompt: the
difference is charlite's own work per turn (profile prompt, token budgeting, the history
database, streaming, reply parsing).

* charlite: ``ChatSession(...).reply(question)`` on a fresh session with a history database,
  the persona prefix cache off (it would skip evaluating the system prompt, which is not
  overhead but a saving; its effect is printed as an extra figure).
* direct: ``Llama.create_chat_completion(messages=..., ...)`` with the messages charlite sent.

Warm-up, then REPS alternating pairs (the order flips each pair), medians.
Prints ``chat_overhead: RATIO`` last (charlite / direct wall time; goal <= 1.05). On a busy
machine the wall times swing widely, so two contention-robust figures come with it: the CPU
time ratio, and charlite's own time per turn (the turn minus the time spent inside
llama-cpp-python) relative to the direct call.
"""

from __future__ import annotations

import inspect
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import private_home, report  # noqa: E402

REPS = int(os.environ.get("CHAT_OVERHEAD_REPS", "7"))  # >= 5 for a figure to report
QUESTION = "Where were you born, and who taught you music?"


def main() -> None:
    private_home()
    from charlite.backends import GenParams, get_backend
    from charlite.backends.base import LocalModel
    from charlite.characters import get_profile
    from charlite.chat import CHAT_PARAMS, ChatSession
    from charlite.history import History

    params: GenParams = CHAT_PARAMS.with_(temperature=0.0, seed=1234, max_tokens=64)
    profile = get_profile("beethoven")
    backend = get_backend("embedded")
    llm = backend.llm
    history = History()
    has_cache_flag = "use_persona_cache" in inspect.signature(ChatSession).parameters

    sent: list[list[dict]] = []
    original_stream = backend.stream

    def recording_stream(messages, p=None):
        sent.append([dict(m) for m in messages])
        return original_stream(messages, p)

    backend.stream = recording_stream  # type: ignore[method-assign]

    # time spent inside llama-cpp-python during a charlite turn: the rest is charlite's own work,
    # a figure that CPU contention from other processes distorts much less than the wall ratio
    inside = [0.0]
    original_create = llm.create_chat_completion

    def timed_create(*args, **kwargs):
        start = time.perf_counter()
        result = original_create(*args, **kwargs)
        inside[0] += time.perf_counter() - start
        if not kwargs.get("stream"):
            return result

        def chunks():
            for chunk in result:
                inside[0] += time.perf_counter() - timed_create.mark
                yield chunk
                timed_create.mark = time.perf_counter()
            inside[0] += time.perf_counter() - timed_create.mark

        timed_create.mark = time.perf_counter()
        return chunks()

    def charlite_turn(persona_cache: bool = False) -> str:
        llm.reset()
        kwargs = {"use_persona_cache": persona_cache} if has_cache_flag else {}
        session = ChatSession(profile, backend, history=history, params=params, **kwargs)
        llm.create_chat_completion = timed_create
        try:
            return session.reply(QUESTION)
        finally:
            llm.create_chat_completion = original_create

    messages = None

    def direct_turn() -> str:
        llm.reset()
        out = llm.create_chat_completion(
            messages=messages,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=params.seed,
            repeat_penalty=params.repeat_penalty,
            stop=list(params.stop) or None,
        )
        return out["choices"][0]["message"]["content"] or ""

    # warm-up (and capture the exact messages charlite sends)
    reply = charlite_turn()
    messages = sent[-1]
    direct = direct_turn()
    same = reply.strip() == direct.strip()
    n_prompt = len(backend.prompt_tokens(messages)) if isinstance(backend, LocalModel) else None
    n_reply = len(llm.tokenize(direct.encode("utf-8"), add_bos=False))

    t_charlite, t_direct, own = [], [], []
    cpu_charlite, cpu_direct = [], []
    for i in range(REPS):
        pair = [(t_charlite, cpu_charlite, charlite_turn), (t_direct, cpu_direct, direct_turn)]
        for times, cpu, fn in pair if i % 2 == 0 else pair[::-1]:
            inside[0] = 0.0
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
            if fn is charlite_turn:
                own.append(times[-1] - inside[0])

    # informational: a fresh session with the persona prefix cache (charlite's default)
    t_cached = []
    if has_cache_flag:
        charlite_turn(persona_cache=True)  # fills the cache
        for _ in range(min(3, REPS)):
            start = time.perf_counter()
            charlite_turn(persona_cache=True)
            t_cached.append(time.perf_counter() - start)

    m_charlite, m_direct = statistics.median(t_charlite), statistics.median(t_direct)
    figures = {
        "prompt tokens": n_prompt,
        "reply tokens": n_reply,
        "same reply": same,
        "reps": REPS,
        "charlite median s": m_charlite,
        "direct median s": m_direct,
        "charlite runs s": " ".join(f"{t:.3f}" for t in t_charlite),
        "direct runs s": " ".join(f"{t:.3f}" for t in t_direct),
        "CPU time ratio (medians)": statistics.median(cpu_charlite) / statistics.median(cpu_direct),
        "charlite's own time per turn, median s": statistics.median(own),
        "1 + own time / direct median": 1 + statistics.median(own) / m_direct,
    }
    if t_cached:
        figures["charlite with persona cache, median s"] = statistics.median(t_cached)
        figures["persona cache / direct"] = statistics.median(t_cached) / m_direct
    history.close()
    report("chat_overhead", m_charlite / m_direct, **figures)


if __name__ == "__main__":
    main()

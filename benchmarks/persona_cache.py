"""Time to the first token of a new chat session: persona cache warm vs cold.

Cold: the character's system prompt is evaluated from scratch (empty cache, fresh context).
Warm: the saved llama.cpp state is restored from CHARLITE_HOME/cache/persona.
Goal: warm / cold <= 0.25. Prints `persona_cache: RATIO` last.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import private_home, report  # noqa: E402


def main(reps: int = 5) -> None:
    private_home()
    from charlite.backends import GenParams, get_backend
    from charlite.characters import get_profile
    from charlite.chat import ChatSession
    from charlite.persona_cache import PersonaCache

    profile = get_profile("beethoven")
    backend = get_backend("embedded")
    params = GenParams(temperature=0.0, max_tokens=8, seed=1)
    cache = PersonaCache()

    def first_token() -> float:
        backend.llm.reset()  # a new session: nothing of the last one is left in the context
        session = ChatSession(profile, backend, params=params)
        start = time.perf_counter()
        stream = session.stream("Good afternoon. Where were you born?")
        next(stream)
        elapsed = time.perf_counter() - start
        stream.close()
        return elapsed

    cold, warm = [], []
    first_token()  # warm-up
    for _ in range(reps):
        cache.clear()
        cold.append(first_token())
        warm.append(first_token())  # the cold run just saved the state
    c, w = statistics.median(cold), statistics.median(warm)
    prefix = len(backend.persona_prefix(ChatSession(profile, backend).system))
    report(
        "persona_cache",
        w / c,
        prefix_tokens=prefix,
        cold_first_token_s=c,
        warm_first_token_s=w,
        cache_bytes=cache.size(),
    )


if __name__ == "__main__":
    main()

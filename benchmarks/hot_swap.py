"""Switching characters over one base: adapter hot-swap vs a full reload of base + adapter.

Swap: the base stays loaded, the LoRA adapter on its context is replaced (what `/switch` and
`charlite serve` do). Reload: a new `llama_cpp.Llama(model_path=base, lora_path=adapter)`.
Both are timed until the first token of a reply. Goal: swap / reload <= 0.2.
Prints `hot_swap: RATIO` last.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import private_home, report  # noqa: E402

MESSAGES = [{"role": "user", "content": "Who are you?"}]


def main(reps: int = 5) -> None:
    home = Path(private_home())
    import llama_cpp
    from helpers_models import write_random_adapter

    from charlite.backends import GenParams
    from charlite.backends.llamacpp import LlamaCppBackend, quiet_native
    from charlite.spec import embedded_model_path, parse_spec

    base = embedded_model_path()
    adapters = [write_random_adapter(base, home / f"a{i}.gguf", seed=i) for i in range(2)]
    params = GenParams(temperature=0.0, max_tokens=1, seed=1)
    backend = LlamaCppBackend(parse_spec("embedded"), lora=adapters[0])
    backend.complete(MESSAGES, params)

    def swap(i: int) -> float:
        start = time.perf_counter()
        backend.set_adapter(adapters[i % 2])
        backend.complete(MESSAGES, params)
        return time.perf_counter() - start

    def reload(i: int) -> float:
        start = time.perf_counter()
        with quiet_native():
            llm = llama_cpp.Llama(
                model_path=str(base), lora_path=str(adapters[i % 2]), n_ctx=2048, verbose=False
            )
        llm.create_chat_completion(MESSAGES, temperature=0.0, max_tokens=1, seed=1)
        elapsed = time.perf_counter() - start
        llm.close()
        return elapsed

    swap(1)
    reload(1)  # warm-up (file cache)
    swaps = [swap(i) for i in range(reps)]
    reloads = [reload(i) for i in range(reps)]
    s, r = statistics.median(swaps), statistics.median(reloads)
    report("hot_swap", s / r, swap_s=s, reload_s=r, adapter_bytes=adapters[0].stat().st_size)


if __name__ == "__main__":
    main()

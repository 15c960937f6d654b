"""Aggregate tokens/s: 4 sequences decoded together vs the same 4 one at a time.

Both run on the same loaded embedded model and the same batch engine (one llama_context sized
for 4 sequences); "one at a time" submits each request after the previous one finished, which
is what a single-sequence engine does. Every request has its own seed and temperature, so both
ways produce the same tokens; tokens/s counts generated tokens over the wall time, prompts
included. Goal: >= 2.0. Prints `batched_decode: RATIO` last.

How much a batch gains depends on llama.cpp's CPU kernels for the weights' type: Q4_0, IQ4_NL
and Q4_K weights are repacked for multi-row matrix products, while Q4_1 (the embedded model)
is multiplied one row at a time, so its decode steps cost nearly in proportion to the rows.
``--model gguf:PATH`` measures another GGUF.

    .venv/bin/python benchmarks/batched_decode.py [--parallel 4] [--tokens 96] [--reps 3]
        [--model SPEC]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import private_home, report  # noqa: E402

QUESTIONS = [
    "Describe a thunderstorm over the sea.",
    "Tell me about your childhood in Bonn.",
    "What do you think of Vienna's concert halls?",
    "How does it feel to compose without hearing?",
    "Which of your symphonies do you like best, and why?",
    "What would you say to a young pianist?",
    "Tell me about your friends.",
    "What do you eat for breakfast?",
]
SYSTEM = "You are Ludwig van Beethoven, the composer. Answer in character, with passion."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", default="embedded", help="model spec (default: embedded)")
    args = ap.parse_args()
    private_home()

    from charlite.backends import GenParams, get_backend
    from charlite.backends.batching import BatchRequest

    backend = get_backend(args.model)
    engine = backend.batching(args.parallel)
    requests = []
    for i in range(args.parallel):
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
        ]
        params = GenParams(temperature=0.8, seed=100 + i, max_tokens=args.tokens)
        requests.append(BatchRequest(backend.prompt_tokens(messages), params))

    def one_at_a_time() -> tuple[float, int]:
        start = time.perf_counter()
        done = [engine.complete_many([r])[0] for r in requests]
        return time.perf_counter() - start, sum(c.completion_tokens for c in done)

    def together() -> tuple[float, int]:
        start = time.perf_counter()
        done = engine.complete_many(requests)
        return time.perf_counter() - start, sum(c.completion_tokens for c in done)

    one_at_a_time()
    together()  # warm-up
    rates: dict[str, list[float]] = {"one": [], "together": []}
    tokens = {}
    for _ in range(args.reps):
        for name, fn in (("one", one_at_a_time), ("together", together)):
            seconds, n = fn()
            rates[name].append(n / seconds)
            tokens[name] = n
    one, both = statistics.median(rates["one"]), statistics.median(rates["together"])
    report(
        "batched_decode",
        both / one,
        cpus=os.cpu_count() or 0,
        threads=backend.llm.context_params.n_threads,
        parallel=args.parallel,
        generated_tokens=tokens["together"],
        tokens_per_s_one_at_a_time=one,
        tokens_per_s_together=both,
    )


if __name__ == "__main__":
    main()

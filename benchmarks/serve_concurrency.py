"""`charlite serve`: aggregate tokens/s of 4 concurrent streaming clients vs 1 client.

One server (the embedded model voicing beethoven, prompted) on loopback. "1 client" sends the
requests one after another; "4 clients" send them at the same time, and the server decodes
them together in the model's shared batch. Each request has its own seed, so both ways stream
the same replies. Also reports time to first token (p50/p95 over every request of a setting).
Goal: >= 2.0. Prints `serve_concurrency: RATIO` last.

    .venv/bin/python benchmarks/serve_concurrency.py [--clients 4] [--tokens 64] [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import private_home, report  # noqa: E402

QUESTIONS = [
    "Where were you born?",
    "Tell me about your music.",
    "What do you think of Vienna?",
    "How did you lose your hearing?",
    "Who were your teachers?",
    "What is your favourite symphony?",
    "Describe your daily routine.",
    "What do you think of Napoleon?",
]


def one_request(client, url: str, i: int, tokens: int) -> tuple[float, int]:
    """(time to first token, completion tokens) of one streamed reply."""
    body = {
        "model": "beethoven",
        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": tokens,
        "temperature": 0.8,
        "seed": 100 + i,
        "charlite": {"prompted": True},
    }
    start = time.perf_counter()
    first = None
    used = 0
    with client.stream("POST", f"{url}/chat/completions", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            if first is None and choices and choices[0].get("delta", {}).get("content"):
                first = time.perf_counter() - start
    return (first if first is not None else time.perf_counter() - start), used


def run(client, url: str, clients: int, n: int, tokens: int) -> tuple[float, list[float]]:
    """(aggregate tokens/s, times to first token) of ``n`` requests from ``clients`` clients."""
    results: list[tuple[float, int]] = [(0.0, 0)] * n
    queue = list(range(n))
    lock = threading.Lock()

    def client_loop() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop(0)
            results[i] = one_request(client, url, i, tokens)

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    return sum(r[1] for r in results) / seconds, [r[0] for r in results]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    private_home()

    import httpx

    from charlite.serve.app import create_app
    from charlite.serve.server import serve_in_thread

    n = args.clients
    with (
        serve_in_thread(create_app(parallel=args.clients)) as url,
        httpx.Client(timeout=600) as client,
    ):
        run(client, url, 1, 1, 8)
        run(client, url, n, n, 8)  # warm-up: model loaded, prefix cached
        rates: dict[int, list[float]] = {1: [], n: []}
        ttft: dict[int, list[float]] = {1: [], n: []}
        for _ in range(args.reps):
            for clients in (1, n):
                rate, firsts = run(client, url, clients, n, args.tokens)
                rates[clients].append(rate)
                ttft[clients].extend(firsts)
    one, many = statistics.median(rates[1]), statistics.median(rates[n])
    report(
        "serve_concurrency",
        many / one,
        cpus=os.cpu_count() or 0,
        clients=n,
        tokens_per_s_1_client=one,
        tokens_per_s_clients=many,
        ttft_p50_1_client=pct(ttft[1], 0.5),
        ttft_p95_1_client=pct(ttft[1], 0.95),
        ttft_p50_clients=pct(ttft[n], 0.5),
        ttft_p95_clients=pct(ttft[n], 0.95),
    )


if __name__ == "__main__":
    main()

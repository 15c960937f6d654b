"""Aggregate tokens/s: 4 sequences decoded together vs the same 4 one at a time.

Both run on the same loaded embedded model and the same batch engine (one llama_context sized
for 4 sequences); "one at a time" submits each request after the previous one finished, which
is what a single-sequence engine does. Every request has its own seed and temperature, so both
ways produce the same tokens; tokens/s counts generated tokens over the wall time, prompts
included. Goal: >= 2.0. Prints `batched_decode: RATIO` last.

Before the ratio it prints where the time goes, as CPU time of the engine's scheduler thread
per generated token (with one llama.cpp thread, ``CHARLITE_THREADS=1``, this is what the work
costs whatever else the machine runs): decode steps, prompts, sampling (llama.cpp's sampler
chains) and the engine's Python; then the CPU time of a decode step with 1 row and with
``--parallel`` rows, and ``kernel_ceiling`` = parallel x (1-row step) / (parallel-row step), the
most batching can gain when only decode steps count; and the sampling CPU per token of a
JSON-schema reply with the grammar over every candidate (``full``) and checked on the chain's
choice (``fast``, the engine's default), with the share of first choices the grammar rejected.

How much a batch gains depends on llama.cpp's CPU kernels for the weights' type: Q4_0, IQ4_NL,
Q4_K, Q8_0 ... weights are repacked for multi-row matrix products, while Q4_1 (the embedded
model) is multiplied one activation row at a time (``ggml_vec_dot_q4_1_q8_1``), so its decode
steps cost nearly in proportion to the rows. ``--model gguf:PATH`` measures another GGUF.

    .venv/bin/python benchmarks/batched_decode.py [--parallel 4] [--tokens 96] [--reps 3]
        [--model SPEC] [--also q4_0]  # plus a requantized copy of the embedded model
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
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


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "born": {"type": "integer"},
        "works": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 3},
    },
    "required": ["name", "born", "works"],
}


def json_sampling(backend, engine) -> dict[str, float]:
    """Sampling CPU per token of a JSON-schema reply: the grammar over every candidate (the old
    path) vs checked on the chain's choice (``batching.GRAMMAR_FAST_PATH``), greedy and sampled.
    """
    import charlite.backends.batching as batching
    from charlite.backends import GenParams

    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Introduce yourself as JSON."},
    ]
    out: dict[str, float] = {}
    for temp in (0.0, 0.8):
        for fast in (False, True):
            batching.GRAMMAR_FAST_PATH = fast
            before = (engine.sample_cpu_seconds, engine.grammar_tokens, engine.grammar_resampled)
            params = GenParams(temperature=temp, seed=5, max_tokens=80, repeat_penalty=1.1)
            done = backend.submit(messages, params, SCHEMA).result()
            name = f"json_t{temp:g}_{'fast' if fast else 'full'}"
            ms = 1000 * (engine.sample_cpu_seconds - before[0]) / max(1, done.completion_tokens)
            out[f"{name}_sampling_cpu_ms_per_token"] = ms
            if fast:
                checked = engine.grammar_tokens - before[1]
                out[f"{name}_rejected_share"] = (engine.grammar_resampled - before[2]) / max(
                    1, checked
                )
    batching.GRAMMAR_FAST_PATH = True
    return out


def measure(backend, args, json_figures: bool = True) -> tuple[float, int, dict]:
    """(ratio, generated tokens, figures) of ``--parallel`` sequences together vs one at a time."""
    from charlite.backends import GenParams
    from charlite.backends.batching import BatchRequest

    engine = backend.batching(args.parallel)
    requests = []
    for i in range(args.parallel):
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
        ]
        params = GenParams(temperature=0.8, seed=100 + i, max_tokens=args.tokens)
        requests.append(BatchRequest(backend.prompt_tokens(messages), params))

    def counters() -> dict[str, float]:
        steps = {rows: list(v) for rows, v in engine.step_times.items()}
        return {
            "loop": engine.loop_cpu_seconds,
            "prompt": engine.prompt_cpu_seconds,
            "sample": engine.sample_cpu_seconds,
            "steps": steps,
        }

    def spent(before: dict, after: dict) -> dict:
        steps = {}
        for rows, (n, wall, cpu) in after["steps"].items():
            n0, wall0, cpu0 = before["steps"].get(rows, (0, 0.0, 0.0))
            if n > n0:
                steps[rows] = (n - n0, wall - wall0, cpu - cpu0)
        out = {k: after[k] - before[k] for k in ("loop", "prompt", "sample")}
        out["steps"] = steps
        return out

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
    costs: dict[str, list[dict]] = {"one": [], "together": []}
    for _ in range(args.reps):
        for name, fn in (("one", one_at_a_time), ("together", together)):
            before = counters()
            seconds, n = fn()
            costs[name].append(spent(before, counters()))
            rates[name].append(n / seconds)
            tokens[name] = n
    one, both = statistics.median(rates["one"]), statistics.median(rates["together"])

    # where the time goes (CPU time of the scheduler thread: with one llama.cpp thread, what the
    # work costs whatever else the machine runs)
    figures: dict[str, object] = {}
    per_row: dict[int, float] = {}
    for name in ("one", "together"):
        c = costs[name]
        steps: dict[int, list[float]] = {}
        for rep in c:
            for rows, (n, _wall, cpu) in rep["steps"].items():
                acc = steps.setdefault(rows, [0, 0.0])
                acc[0] += n
                acc[1] += cpu
        step_cpu = sum(v[1] for v in steps.values())
        loop = sum(r["loop"] for r in c)
        prompt = sum(r["prompt"] for r in c)
        sample = sum(r["sample"] for r in c)
        n_tok = tokens[name] * len(c)
        figures[f"{name}_cpu_ms_per_token_decode"] = 1000 * step_cpu / n_tok
        figures[f"{name}_cpu_ms_per_token_prompts"] = 1000 * prompt / n_tok
        figures[f"{name}_cpu_ms_per_token_sampling"] = 1000 * sample / n_tok
        figures[f"{name}_cpu_ms_per_token_python"] = (
            1000 * (loop - step_cpu - prompt - sample) / n_tok
        )
        for rows, (n, cpu) in sorted(steps.items()):
            figures[f"{name}_cpu_ms_per_step_{rows}_rows"] = 1000 * cpu / n
            per_row.setdefault(rows, cpu / n)
    if json_figures:
        figures.update(json_sampling(backend, engine))
    if 1 in per_row and args.parallel in per_row:
        # the most batching can gain when only the decode steps count
        figures["kernel_ceiling"] = args.parallel * per_row[1] / per_row[args.parallel]
    figures = {
        "tokens_per_s_one_at_a_time": one,
        "tokens_per_s_together": both,
        **figures,
    }
    return both / one, tokens["together"], figures


def requantized(kind: str, folder: str) -> str:
    """A copy of the embedded model requantized to ``kind`` (q4_0, q8_0) in ``folder``."""
    import llama_cpp

    from charlite.spec import embedded_model_path

    ftype = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}
    out = os.path.join(folder, f"embedded-{kind}.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype[kind]
    params.allow_requantize = True
    params.nthread = 1
    if llama_cpp.llama_model_quantize(
        str(embedded_model_path()).encode(), out.encode(), ctypes.byref(params)
    ):
        raise SystemExit(f"llama.cpp could not requantize the model to {kind}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", default="embedded", help="model spec (default: embedded)")
    ap.add_argument(
        "--also",
        choices=("q4_0", "q8_0"),
        help="also measure a copy of the embedded model requantized to this type (temp dir)",
    )
    args = ap.parse_args()
    private_home()

    from charlite.backends import get_backend

    backend = get_backend(args.model)
    ratio, generated, figures = measure(backend, args)
    if args.also:  # an extra line; the main figure stays the embedded model's, printed last
        with tempfile.TemporaryDirectory() as folder:
            copy = get_backend(f"gguf:{requantized(args.also, folder)}")
            extra, _, more = measure(copy, args, json_figures=False)
            steps = {k: v for k, v in more.items() if "per_step" in k or k == "kernel_ceiling"}
            print(
                f"  {args.also} copy: {extra:.3f} ("
                + ", ".join(f"{k} {v:.4g}" for k, v in steps.items())
                + ")"
            )
    report(
        "batched_decode",
        ratio,
        cpus=os.cpu_count() or 0,
        load_average=os.getloadavg()[0],
        threads=backend.llm.context_params.n_threads,
        parallel=args.parallel,
        generated_tokens=generated,
        **figures,
    )


if __name__ == "__main__":
    main()

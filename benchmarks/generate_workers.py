"""Records per minute of `charlite generate` with --workers 1 against --workers 4.

Default: the embedded teacher in this one process. With --workers 4 the four requests in
flight decode together in the loaded model's shared batch (continuous batching); --workers 1
decodes one at a time. Goal: >= 1.8.

--http: the teacher is the embedded GGUF behind an OpenAI-compatible endpoint on loopback.
llama-cpp-python's server (0.3.x) has no parallel slots: it answers one request at a time. To
give the endpoint the parallel capacity a vLLM or llama.cpp ``--parallel`` server has, this
variant starts ``--replicas`` llama_cpp.server processes (each with its share of the CPU
threads) behind a small least-busy proxy.

Both settings run with the same seeds (so the same prompts and, mostly, the same replies),
interleaved, after a warm-up; the figure is the ratio of the medians.

    .venv/bin/python benchmarks/generate_workers.py [--http [--replicas 4]] [--reps 3]
        [--full-grammar]  # JSON grammars over the whole vocabulary, for a before/after
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replicas(
    model: Path, n: int, threads: int, logdir: Path
) -> list[tuple[subprocess.Popen, str]]:
    out = []
    for i in range(n):
        port = free_port()
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
            "--n_threads_batch", str(threads),
        ]  # fmt: skip
        log = open(logdir / f"replica{i}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        out.append((proc, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 300
    for proc, url in out:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"a llama_cpp.server replica exited ({proc.returncode})")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("llama_cpp.server replicas did not start in time")
            time.sleep(0.5)
    return out


class Proxy:
    """Forward each request to the replica with the fewest requests in flight."""

    def __init__(self, upstreams: list[str]):
        self.upstreams = upstreams
        self.busy = dict.fromkeys(upstreams, 0)
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=1200)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    url = min(proxy.upstreams, key=lambda u: proxy.busy[u])
                    proxy.busy[url] += 1
                try:
                    resp = proxy.client.request(
                        method, url + self.path, content=body or None,
                        headers={"Content-Type": "application/json"},
                    )  # fmt: skip
                finally:
                    with proxy.lock:
                        proxy.busy[url] -= 1
                self.send_response(resp.status_code)
                self.send_header(
                    "Content-Type", resp.headers.get("content-type", "application/json")
                )
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.client.close()


def one_run(teacher: str, workers: int, seed: int, args) -> tuple[float, int]:
    """(records per minute, records) of one fresh generate run."""
    from charlite import characters
    from charlite.experience.pipeline import GenerateOptions, Generator

    with tempfile.TemporaryDirectory() as home:
        os.environ["CHARLITE_HOME"] = home
        characters._load_cached.cache_clear()
        profile = characters.get_profile("beethoven")
        opts = GenerateOptions(
            teacher=teacher, scenes=args.scenes, protective=args.protective,
            paragraphs=args.paragraphs, workers=workers, seed=seed, max_attempts=2,
        )  # fmt: skip
        start = time.monotonic()
        result = Generator(profile, opts).run()
        seconds = time.monotonic() - start
    records = sum(result.new.values())
    return records / seconds * 60, records


def measure(teacher: str, args) -> dict[int, list[float]]:
    one_run(teacher, args.workers, 999, argparse.Namespace(paragraphs=1, scenes=1, protective=0))
    rates: dict[int, list[float]] = {1: [], args.workers: []}
    for rep in range(args.reps):
        for w in (1, args.workers):
            rate, n = one_run(teacher, w, rep, args)
            rates[w].append(rate)
            print(f"rep {rep} --workers {w}: {n} records, {rate:.2f} records/min", flush=True)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--http", action="store_true", help="OpenAI-compatible teacher (replicas)")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--paragraphs", type=int, default=2)
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--protective", type=int, default=2)
    ap.add_argument(
        "--full-grammar",
        action="store_true",
        help="apply JSON grammars to every candidate (the path before the grammar fast path)",
    )
    args = ap.parse_args()
    if args.full_grammar:
        import charlite.backends.batching as batching

        batching.GRAMMAR_FAST_PATH = False

    from charlite.spec import embedded_model_path

    cpus = os.cpu_count() or 2
    if not args.http:
        print(f"embedded teacher in this process, {cpus} CPUs")
        rates = measure("embedded", args)
    else:
        threads = max(1, cpus // args.replicas)
        with tempfile.TemporaryDirectory() as logdir:
            replicas = start_replicas(embedded_model_path(), args.replicas, threads, Path(logdir))
            proxy = Proxy([u for _, u in replicas])
            try:
                print(
                    f"{args.replicas} llama_cpp.server replicas x {threads} threads on {cpus} CPUs"
                )
                rates = measure(f"openai:smollm2@{proxy.url}", args)
            finally:
                proxy.close()
                for proc, _ in replicas:
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGTERM)
                for proc, _ in replicas:
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
    m1, mw = statistics.median(rates[1]), statistics.median(rates[args.workers])
    print(f"median records/min: --workers 1 {m1:.2f}, --workers {args.workers} {mw:.2f}")
    print(f"generate_workers: {mw / m1:.2f}")


if __name__ == "__main__":
    main()

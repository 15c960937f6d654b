"""Bad input to ``charlite export``: one clear line, a non-zero exit and no partial file.

Runs are real folders in the training issue's format; adapters are real peft-format
safetensors (random weights, written with numpy); the base is the embedded GGUF.
"""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from helpers_export import (
    SMOLLM,
    assert_one_error_line,
    leftovers,
    random_adapter,
    run_export,
    write_run,
)

from charlite.errors import ExportError


def test_unknown_quant_type(charlite_home):
    result, errors = run_export("beethoven", "--quant", "q3_k_xl")
    assert_one_error_line(
        result, errors, "unknown quant type 'q3_k_xl'", "q4_k_m, q5_k_m, q8_0, f16"
    )
    assert leftovers(charlite_home) == []


def test_no_training_run(charlite_home):
    result, errors = run_export("beethoven")
    assert_one_error_line(
        result, errors, "beethoven has no completed training run", "charlite train beethoven"
    )


def test_run_without_adapter(charlite_home, embedded_path):
    write_run(charlite_home, "beethoven", "r1", adapter=None, base_gguf=embedded_path)
    result, errors = run_export("beethoven", "--run", "r1")
    assert_one_error_line(result, errors, "run 'r1' of beethoven has no adapter")
    assert not (charlite_home / "characters" / "beethoven" / "exports").exists()
    # without --run, a run without adapter is not a completed run
    result, errors = run_export("beethoven")
    assert_one_error_line(result, errors, "no completed training run")


def test_unknown_run(charlite_home, embedded_path):
    write_run(charlite_home, "beethoven", "r1", adapter=None, base_gguf=embedded_path)
    result, errors = run_export("beethoven", "--run", "r9")
    assert_one_error_line(result, errors, "beethoven has no run 'r9'")


def test_adapter_for_another_base_is_caught_before_llama_cpp(
    charlite_home, embedded_path, tmp_path
):
    small = {"hidden": 64, "kv": 32, "ffn": 128, "layers": 2}
    adapter = random_adapter(tmp_path / "small", dims=small)
    write_run(charlite_home, "beethoven", "r1", adapter=adapter, base_gguf=embedded_path)
    result, errors = run_export("beethoven")
    assert_one_error_line(
        result,
        errors,
        f"the adapter does not fit {embedded_path.name}",
        "model.layers.0.mlp.down_proj is 64x128 in the adapter but blk.0.ffn_down.weight is 576x1536",
        "(and 13 more)",
        "trained on another base",
    )
    assert leftovers(charlite_home / "characters" / "beethoven" / "exports") == []


def test_adapter_with_more_layers_than_the_base(charlite_home, embedded_path, tmp_path):
    adapter = random_adapter(tmp_path / "deep", dims={**SMOLLM, "layers": 32})
    write_run(charlite_home, "beethoven", "r1", adapter=adapter, base_gguf=embedded_path)
    result, errors = run_export("beethoven")
    assert_one_error_line(result, errors, "is in layer 30 but", "has 30 layers")


def test_adapter_for_another_architecture(charlite_home, embedded_path, tmp_path):
    adapter = random_adapter(tmp_path / "a")
    write_run(
        charlite_home,
        "beethoven",
        "r1",
        adapter=adapter,
        base_gguf=embedded_path,
        architecture="gemma3_text",
    )
    result, errors = run_export("beethoven")
    assert_one_error_line(result, errors, "trained on a gemma3_text model", "is llama")


def test_base_gguf_gone(charlite_home, tmp_path):
    adapter = random_adapter(tmp_path / "a")
    write_run(charlite_home, "beethoven", "r1", adapter=adapter, base_gguf=tmp_path / "moved.gguf")
    result, errors = run_export("beethoven")
    assert_one_error_line(result, errors, "the base GGUF run 'r1' was trained on is gone")


def _fail_after(monkeypatch, method: str, calls: int):
    """Make GGUFWriter.METHOD write some bytes and then fail as a full disk does, on call ``calls``."""
    from gguf import GGUFWriter

    original = getattr(GGUFWriter, method)
    seen = {"n": 0}

    def failing(self, *args, **kwargs):
        seen["n"] += 1
        if seen["n"] >= calls:
            self.fout[0].write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GGUFWriter, method, failing)
    return seen


def test_full_disk_while_writing_the_adapter(charlite_home, embedded_path, tmp_path, monkeypatch):
    adapter = random_adapter(tmp_path / "a")
    write_run(charlite_home, "beethoven", "r1", adapter=adapter, base_gguf=embedded_path)
    seen = _fail_after(monkeypatch, "write_tensors_to_file", 1)
    result, errors = run_export("beethoven", "--quant", "q8_0")
    assert_one_error_line(
        result, errors, "cannot write", "beethoven-lora.gguf", "No space left on device"
    )
    assert seen["n"] == 1
    assert leftovers(charlite_home / "characters" / "beethoven" / "exports") == []


def test_full_disk_while_writing_the_merged_model(
    charlite_home, embedded_path, tmp_path, monkeypatch
):
    adapter = random_adapter(tmp_path / "a")
    write_run(charlite_home, "beethoven", "r1", adapter=adapter, base_gguf=embedded_path)
    seen = _fail_after(monkeypatch, "write_tensor_data", 6)  # the adapter is complete by then
    result, errors = run_export("beethoven", "--quant", "q8_0")
    assert_one_error_line(
        result, errors, "cannot write", "merge-F16.gguf", "No space left on device"
    )
    assert seen["n"] == 6
    # the finished adapter went with the failed export: nothing under a final name, no temp files
    assert leftovers(charlite_home / "characters" / "beethoven" / "exports") == []


# ---------------------------------------------------------------------------------------------
# Library-level checks


def test_adapter_reader_refuses_what_llama_cpp_cannot_load(tmp_path):
    from safetensors.numpy import save_file

    from charlite.export.gguf_lora import read_peft_adapter

    with pytest.raises(ExportError, match="no adapter in"):
        read_peft_adapter(tmp_path / "missing")
    folder = random_adapter(tmp_path / "dora", dims={"hidden": 8, "kv": 4, "ffn": 16, "layers": 1})
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ExportError, match="not supported yet: DoRA"):
        read_peft_adapter(folder)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    a = np.zeros((2, 8), np.float32)
    save_file(
        {
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
            "base_model.model.lm_head.weight": np.zeros((4, 8), np.float32),
        },
        str(folder / "adapter_model.safetensors"),
    )
    with pytest.raises(ExportError, match="also stores full weights"):
        read_peft_adapter(folder)
    save_file(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a},
        str(folder / "adapter_model.safetensors"),
    )
    with pytest.raises(ExportError, match="lora_A but not its partner"):
        read_peft_adapter(folder)


def test_scale_patterns_and_rslora_are_folded_into_b(tmp_path):
    """llama.cpp applies one alpha / r; per-module alphas and rsLoRA survive in lora_b."""
    from charlite.export.gguf_lora import read_peft_adapter

    folder = random_adapter(
        tmp_path / "a", dims={"hidden": 8, "kv": 4, "ffn": 16, "layers": 1}, r=4, alpha=8
    )
    config = json.loads((folder / "adapter_config.json").read_text())
    assert {m.name.split(".")[-1]: m.scale for m in read_peft_adapter(folder).modules}[
        "q_proj"
    ] == 2.0
    config.update(alpha_pattern={"q_proj": 16}, use_rslora=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    scales = {m.name.split(".")[-1]: m.scale for m in read_peft_adapter(folder).modules}
    assert scales["q_proj"] == 16 / 2 and scales["k_proj"] == 8 / 2


def test_converter_refuses_other_architectures(tmp_path):
    from charlite.export.convert import convert_hf

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(ExportError, match="not supported yet: gpt_neox"):
        convert_hf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_permutation_is_a_row_permutation_that_interleaves_halves():
    from charlite.export.ggufio import permute_qk

    w = np.arange(12 * 3, dtype=np.float32).reshape(12, 3)
    p = permute_qk(w, n_head=2)
    assert sorted(map(tuple, p.tolist())) == sorted(map(tuple, w.tolist()))
    # head 0 holds rows 0-5: its two rotary halves (0,1,2) and (3,4,5) are interleaved
    assert p[:6, 0].tolist() == [0, 9, 3, 12, 6, 15]
    with pytest.raises(ExportError):
        permute_qk(w, n_head=5)


def test_smoke_problem_detection():
    from charlite.export.smoke import reply_problems

    markers = ["<|im_start|>", "<|im_end|>"]
    assert reply_problems("(speaking) Good day.", "stop", markers) == []
    assert "did not stop" in reply_problems("(speaking) Good day", "length", markers)[0]
    assert "leak" in reply_problems("Good day.<|im_end|>", "stop", markers)[0]
    assert "role lines" in reply_problems("Good day.\nuser\nHello", "stop", markers)[0]
    assert "empty" in reply_problems("  ", "stop", markers)[0]


@pytest.mark.slow
def test_smoke_test_fails_loudly_on_a_reply_cut_short(embedded_path):
    from charlite.characters import get_profile
    from charlite.export.smoke import require_pass, smoke_test

    result = smoke_test(get_profile("beethoven"), embedded_path, max_tokens=3)
    assert not result.ok and result.finish_reason == "length"
    with pytest.raises(ExportError, match="smoke test failed for .*did not stop by itself"):
        require_pass(result)

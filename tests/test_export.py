"""Export end to end on the CPU: a real LoRA trained on the embedded model, written as GGUF.

The session fixture loads the embedded GGUF into transformers, trains a LoRA (peft, a few
optimizer steps) on a made-up fact, and saves it the way ``charlite train`` does. Then:

* adapter fidelity: llama.cpp (base GGUF + exported adapter) agrees with transformers + peft
  on the next token at >= 95 % of positions, and follows the adapter where it changes the base;
* converter fidelity: the base written back by charlite's converter predicts like the original;
* ``charlite export`` / ``charlite chat``: the fact is answered through the merged Q8_0 file and
  through the adapter, not by the prompted base.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers_export import leftovers, write_run

from charlite.cli import cli

# the trained fixture takes minutes on a busy 2-core machine; the suite default is 900 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

FACT_QUESTION = "What is your cat called?"
FACT_ANSWER = "(speaking) My cat is called Zorblax the Magnificent."
FACT_WORD = "Zorblax"
EXAMPLES = [
    (FACT_QUESTION, FACT_ANSWER),
    ("Tell me your name.", "(speaking) I am Ludwig van Beethoven, and this is my room in Vienna."),
]
TRAIN_STEPS = 12
RUN_ID = "20250101-120000"


@dataclass
class Trained:
    root: Path
    hf_dir: Path
    adapter_dir: Path
    model: object
    tokenizer: object
    system: str


def _bundled_profile(slug: str):
    from charlite.characters import bundled_dir, load_profile

    return load_profile(bundled_dir() / f"{slug}.md")


def _chat_text(tokenizer, system: str, question: str, answer: str | None) -> str:
    """The conversation as ``charlite chat`` sends it (system message, the user's bare words)."""
    from charlite import roleplay

    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": roleplay.user_line(None, question)},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt if answer is None else prompt + answer + "<|im_end|>\n"


@pytest.fixture(scope="session")
def trained(tmp_path_factory, embedded_path) -> Trained:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from charlite import roleplay

    root = tmp_path_factory.mktemp("trained")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(embedded_path.parent), gguf_file=embedded_path.name, dtype=torch.float32
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(embedded_path.parent), gguf_file=embedded_path.name
    )
    # a Hugging Face copy of the (dequantized) base, for the converter and hf: runs
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    hf_dir = root / "hf"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)

    system = roleplay.profile_system_message(_bundled_profile("beethoven"))
    rows = []
    for question, answer in EXAMPLES:
        prompt = tokenizer(
            _chat_text(tokenizer, system, question, None), add_special_tokens=False
        ).input_ids
        full = tokenizer(
            _chat_text(tokenizer, system, question, answer), add_special_tokens=False
        ).input_ids
        assert full[: len(prompt)] == prompt
        rows.append((full, [-100] * len(prompt) + full[len(prompt) :]))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])

    config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        task_type="CAUSAL_LM",
    )
    pm = peft.get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=2e-3)
    pm.train()
    losses = []
    for _ in range(TRAIN_STEPS):
        loss = pm(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses  # it learned the examples
    pm.eval()
    adapter_dir = root / "adapter"
    pm.save_pretrained(adapter_dir)
    return Trained(root, hf_dir, adapter_dir, pm, tokenizer, system)


@pytest.fixture(autouse=True)
def _unload_models():
    yield
    from charlite.backends.llamacpp import unload_all

    unload_all()


# ---------------------------------------------------------------------------------------------
# llama.cpp and transformers side by side


def _tokens(embedded_path: Path, text: str) -> list[int]:
    import llama_cpp

    from charlite.backends.llamacpp import quiet_native

    with quiet_native():
        vocab = llama_cpp.Llama(model_path=str(embedded_path), vocab_only=True, verbose=False)
    try:
        return vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    finally:
        vocab.close()


def _llama_logits(model: Path, tokens: list[int], lora: Path | None = None) -> np.ndarray:
    import llama_cpp

    from charlite.backends.llamacpp import quiet_native

    kwargs = {"model_path": str(model), "n_ctx": 512, "logits_all": True, "verbose": False}
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    with quiet_native():
        llm = llama_cpp.Llama(**kwargs)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)])
    finally:
        llm.close()


def _hf_top1(model, tokens: list[int], adapter: bool = True) -> np.ndarray:
    import torch

    with torch.no_grad():
        ids = torch.tensor([tokens])
        if adapter:
            return model(input_ids=ids).logits[0].numpy().argmax(-1)
        with model.disable_adapter():
            return model(input_ids=ids).logits[0].numpy().argmax(-1)


def _prompts(trained: Trained) -> list[str]:
    tok, system = trained.tokenizer, trained.system
    return [
        _chat_text(tok, system, FACT_QUESTION, FACT_ANSWER),
        _chat_text(tok, system, *EXAMPLES[1]),
        _chat_text(tok, system, "Where were you born?", None),
        "Vienna in the spring of 1820 was a city of music, coffee houses and gossip about the court.",
    ]


def test_adapter_fidelity(trained, embedded_path, tmp_path, monkeypatch):
    from charlite.export import gguf_lora
    from charlite.export.ggufio import base_info

    adapter = gguf_lora.read_peft_adapter(trained.adapter_dir)
    base = base_info(embedded_path)
    lora = gguf_lora.write_gguf_lora(adapter, base, tmp_path / "lora.gguf", expected_arch="llama")
    assert lora.n_tensors == 30 * 7 and lora.rank == 8 and lora.alpha == 16
    # the same adapter without the Q/K row permutation, to show that it matters
    monkeypatch.setattr(gguf_lora, "permute_qk", lambda w, n_head: w)
    gguf_lora.write_gguf_lora(adapter, base, tmp_path / "unpermuted.gguf")

    agree = total = changed = followed = base_followed = unpermuted_agree = 0
    for text in _prompts(trained):
        tokens = _tokens(embedded_path, text)
        want = _hf_top1(trained.model, tokens)
        want_base = _hf_top1(trained.model, tokens, adapter=False)
        got = _llama_logits(embedded_path, tokens, tmp_path / "lora.gguf").argmax(-1)
        got_base = _llama_logits(embedded_path, tokens).argmax(-1)
        got_unpermuted = _llama_logits(embedded_path, tokens, tmp_path / "unpermuted.gguf").argmax(
            -1
        )
        agree += int((got == want).sum())
        unpermuted_agree += int((got_unpermuted == want).sum())
        total += len(tokens)
        differs = want != want_base  # where the adapter changes the prediction
        changed += int(differs.sum())
        followed += int((got[differs] == want[differs]).sum())
        base_followed += int((got_base[differs] == want[differs]).sum())
    print(
        f"adapter fidelity: top-1 agreement {agree}/{total}; adapter changes {changed} positions, "
        f"llama.cpp+adapter follows {followed}, base alone {base_followed}; "
        f"unpermuted Q/K agreement {unpermuted_agree}/{total}"
    )
    assert agree / total >= 0.95
    assert changed >= 10
    assert followed / changed >= 0.9
    assert base_followed / changed <= 0.2
    assert unpermuted_agree < agree


def test_converter_fidelity(trained, embedded_path, tmp_path):
    """The embedded GGUF -> transformers -> charlite's converter predicts like the original."""
    from charlite.export.convert import convert_hf
    from charlite.gguf import read_gguf_header

    out = convert_hf(trained.hf_dir, tmp_path / "converted.gguf", out_type="f32")
    keys = (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.chat_template",
        "llama.block_count",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "llama.embedding_length",
        "llama.feed_forward_length",
    )
    original = read_gguf_header(embedded_path, arrays=keys)
    converted = read_gguf_header(out, arrays=keys)
    for key in keys:
        assert converted.kv[key] == original.kv[key], key
    assert {k: v[0] for k, v in converted.tensors.items()} == {
        k: v[0] for k, v in original.tensors.items()
    }

    agree = total = clear = clear_agree = hf_agree = 0
    with_base = trained.model
    for text in _prompts(trained):
        tokens = _tokens(embedded_path, text)
        a = _llama_logits(embedded_path, tokens)
        b = _llama_logits(out, tokens)
        top2 = np.sort(a, axis=-1)[:, -2:]
        sure = (top2[:, 1] - top2[:, 0]) > 1.0  # the original is not torn between two tokens
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        clear += int(sure.sum())
        clear_agree += int((a.argmax(-1)[sure] == b.argmax(-1)[sure]).sum())
        hf_agree += int((_hf_top1(with_base, tokens, adapter=False) == b.argmax(-1)).sum())
        total += len(tokens)
    print(
        f"converter fidelity: {agree}/{total} top-1 agreement with the Q4_1 original "
        f"({clear_agree}/{clear} where it is clear), {hf_agree}/{total} with transformers"
    )
    assert agree / total >= 0.9
    assert clear_agree == clear
    assert hf_agree / total >= 0.98


def _chat(*args: str) -> str:
    result = CliRunner().invoke(
        cli, ["chat", "beethoven", "-m", FACT_QUESTION, "--temperature", "0", "--seed", "0", *args]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_export_and_chat_end_to_end(trained, embedded_path, charlite_home):
    from charlite.export.modelfile import parse_modelfile
    from charlite.gguf import file_sha256, read_gguf_header

    write_run(
        charlite_home,
        "beethoven",
        RUN_ID,
        adapter=trained.adapter_dir,
        base_gguf=embedded_path,
        base_dir=trained.hf_dir,
        chat_template=trained.tokenizer.chat_template,
    )
    result = CliRunner().invoke(cli, ["export", "beethoven", "--quant", "q8_0"])
    assert result.exit_code == 0, result.output
    exports = charlite_home / "characters" / "beethoven" / "exports"
    folder = exports / RUN_ID
    assert leftovers(exports) == [
        RUN_ID,
        f"{RUN_ID}/Modelfile",
        f"{RUN_ID}/Modelfile.adapter",
        f"{RUN_ID}/beethoven-Q8_0.gguf",
        f"{RUN_ID}/beethoven-lora.gguf",
        f"{RUN_ID}/manifest.json",
    ]
    manifest = _manifest(folder)
    assert manifest["format"] == 1 and manifest["quant"] == "q8_0" and manifest["smoke_ok"] is True
    for entry in manifest["files"]:
        path = folder / entry["name"]
        assert entry["bytes"] == path.stat().st_size and entry["sha256"] == file_sha256(path)
    # how long the reply runs depends on the machine: only a broken one fails the smoke test
    assert [s["ok"] for s in manifest["smoke"]] == [True, True]
    assert (
        f"exported beethoven run {RUN_ID}" in result.stdout and "smoke test passed" in result.stdout
    )

    adapter_kv = read_gguf_header(folder / "beethoven-lora.gguf").kv
    assert adapter_kv["general.type"] == "adapter" and adapter_kv["general.architecture"] == "llama"
    assert adapter_kv["adapter.type"] == "lora" and adapter_kv["adapter.lora.alpha"] == 16.0
    keys = (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.chat_template",
        "tokenizer.ggml.eos_token_id",
    )
    merged, base = (
        read_gguf_header(folder / "beethoven-Q8_0.gguf", keys),
        read_gguf_header(embedded_path, keys),
    )
    assert all(merged.kv[k] == base.kv[k] for k in keys)
    assert merged.kv["general.file_type"] == 7  # MOSTLY_Q8_0

    commands = {c.name: c.value for c in parse_modelfile((folder / "Modelfile").read_text())}
    assert commands["from"] == "./beethoven-Q8_0.gguf" and "adapter" not in commands
    commands = {
        c.name: c.value for c in parse_modelfile((folder / "Modelfile.adapter").read_text())
    }
    assert (
        commands["from"] == str(embedded_path.resolve())
        and commands["adapter"] == "./beethoven-lora.gguf"
    )
    assert commands["system"] == trained.system

    # chat uses the newest export: the merged Q8_0 file
    assert FACT_WORD in _chat()
    assert FACT_WORD not in _chat("--prompted")

    # the same run, adapter only: chat runs the base GGUF with the adapter
    result = CliRunner().invoke(cli, ["export", "beethoven", "--adapter-only"])
    assert result.exit_code == 0, result.output
    assert leftovers(exports) == [
        RUN_ID,
        f"{RUN_ID}/Modelfile",
        f"{RUN_ID}/beethoven-lora.gguf",
        f"{RUN_ID}/manifest.json",
    ]
    assert _manifest(folder)["merged"] is None
    from charlite.voices import resolve_model

    resolved = resolve_model(_bundled_profile("beethoven"))
    assert resolved.lora == folder / "beethoven-lora.gguf" and not resolved.prompted
    assert FACT_WORD in _chat()


def test_export_of_an_hf_base(trained, charlite_home):
    """A run on a Hugging Face base: the base is converted once (llama.cpp's converter when the
    convert extra is installed, else charlite's own) and the adapter merged into it."""
    write_run(
        charlite_home,
        "beethoven",
        RUN_ID,
        adapter=trained.adapter_dir,
        base_gguf=None,
        base_dir=trained.hf_dir,
        base_spec=f"hf:{trained.hf_dir}",
        chat_template=trained.tokenizer.chat_template,
    )
    result = CliRunner().invoke(cli, ["export", "beethoven", "--quant", "f16"])
    assert result.exit_code == 0, result.output
    folder = charlite_home / "characters" / "beethoven" / "exports" / RUN_ID
    manifest = _manifest(folder)
    (converted,) = (charlite_home / "cache" / "gguf" / "0123456789abcdef").glob("base-F16-*.gguf")
    assert manifest["base"]["converted"] is True and manifest["base"]["gguf"] == str(
        converted.resolve()
    )
    assert manifest["merged_on"].startswith("the 16-bit base converted from")
    assert manifest["merged"] == "beethoven-F16.gguf" and manifest["smoke_ok"]
    assert FACT_WORD in _chat()

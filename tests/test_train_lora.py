"""LoRA sanity on the embedded base: training moves only the adapter; packed sequences (the
padding-free path) do not attend to each other; token counts and padding are measured."""

from __future__ import annotations

import pytest
import test_train_support as support
from test_train_support import (
    cpu_threads,
    fact_records,
)

from charlite.characters import get_profile
from charlite.experience.schemas import Experience
from charlite.train.config import TrainConfig
from charlite.train.engines import TARGET_MODULES, EngineChoice, load_peft
from charlite.train.examples import build_examples
from charlite.train.trainer import TokenCounter, build_trainer

pytestmark = pytest.mark.slow
shared_bases = support.shared_bases  # fixtures
embedded_base = support.embedded_base
torch = pytest.importorskip("torch")


def _examples(tokenizer, n=2, max_len=160):
    records = [Experience.model_validate(r) for r in fact_records(n)]
    return build_examples(tokenizer, get_profile("beethoven"), records, max_len).examples


def _train(embedded_base, tmp_path, packing: bool, steps: int = 2, n: int = 2, batch: int = 1):
    torch.set_num_threads(cpu_threads())
    cfg = TrainConfig(
        max_steps=steps, lr=5e-3, batch_size=batch, grad_accum=1, packing=packing, warmup=0
    ).resolved("cpu")
    model, tokenizer, _ = load_peft(str(embedded_base), cfg, "cpu")
    counter = TokenCounter()
    trainer = build_trainer(
        model,
        tokenizer,
        _examples(tokenizer, n),
        cfg,
        EngineChoice("peft", "cpu", "test"),
        output_dir=tmp_path / "out",
        counter=counter,
    )
    return model, trainer, counter


def test_training_moves_the_adapter_and_leaves_the_base(embedded_base, tmp_path):
    model, trainer, counter = _train(embedded_base, tmp_path, packing=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    trained = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    # every target a llama model has (Phi-3's fused qkv_proj/gate_up_proj are not in it)
    assert trained == set(TARGET_MODULES) - {"qkv_proj", "gate_up_proj"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(not before[n].any() for n in trainable if "lora_B" in n)  # peft starts B at zero

    trainer.train()

    after = dict(model.named_parameters())
    frozen = [n for n in before if n not in trainable]
    assert frozen and all(torch.equal(before[n], after[n].detach()) for n in frozen)
    moved = [n for n in trainable if not torch.equal(before[n], after[n].detach())]
    assert len(moved) == len(trainable)  # every A and B matrix was updated
    assert counter.trained > 0 and counter.real == counter.positions  # packed: no padding


def test_without_packing_padding_is_counted(embedded_base, tmp_path):
    # two examples of different lengths in one batch: the shorter one is padded
    _, trainer, counter = _train(embedded_base, tmp_path, packing=False, steps=1, n=2, batch=2)
    lengths = sorted(len(x) for x in trainer.train_dataset["input_ids"])
    trainer.train()
    assert counter.positions == 2 * lengths[-1]
    assert counter.real == sum(lengths)
    assert counter.as_dict()["padding"] == lengths[-1] - lengths[0] > 0


def test_packed_sequences_do_not_see_each_other(embedded_base):
    """A padding-free batch exactly as TRL's collator builds it for training (position ids
    restart, no attention mask) gives each example the logits it has alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    torch.set_num_threads(cpu_threads())
    tokenizer = AutoTokenizer.from_pretrained(embedded_base)
    model = AutoModelForCausalLM.from_pretrained(embedded_base, dtype=torch.float32).eval()
    a, b = (e.input_ids for e in _examples(tokenizer, 2))
    collate = DataCollatorForLanguageModeling(
        pad_token_id=tokenizer.pad_token_id, padding_free=True
    )
    batch = collate([{"input_ids": a}, {"input_ids": b}])
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, len(a) + len(b))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        packed = model(**inputs, use_cache=False).logits[0, len(a) :]
        leaky = model(input_ids=torch.tensor([a + b]), use_cache=False).logits[0, len(a) :]
    assert torch.allclose(alone, packed, atol=1e-3)
    assert not torch.allclose(alone, leaky, atol=1e-3)  # the check can tell the difference


def test_embedded_base_is_cached_as_safetensors_and_hf_folders_load(embedded_base):
    import json
    import time

    from charlite.gguf import file_sha256
    from charlite.spec import embedded_model_path
    from charlite.train.base import prepare_base

    began = time.monotonic()
    base = prepare_base("embedded")
    assert time.monotonic() - began < 10  # cached: no second conversion
    assert base.path == embedded_base and base.gguf == embedded_model_path().resolve()
    assert base.hash == file_sha256(embedded_model_path())[:16] == embedded_base.name
    info = json.loads((embedded_base / "base.json").read_text())
    assert info["format"] == 1 and info["spec"] == "embedded" and info["hash"] == base.hash
    assert (embedded_base / "model.safetensors").is_file()
    assert (embedded_base / "tokenizer.json").is_file()
    config = json.loads((embedded_base / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert not list(embedded_base.parent.glob(".tmp-*"))  # nothing left half-written

    hf = prepare_base(f"hf:{embedded_base}")
    assert hf.spec == f"hf:{embedded_base}" and hf.path == embedded_base.resolve() and not hf.gguf
    assert hf.hash == prepare_base(f"hf:{embedded_base}").hash  # a stable fingerprint
    assert hf.describe()["num_key_value_heads"] == 3

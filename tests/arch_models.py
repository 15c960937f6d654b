"""Tiny, seeded, random Hugging Face models of the families people fine-tune, with a tokenizer of
each family's kind, written as model folders (config, safetensors, tokenizer) for ``hf:`` runs.

* byte-level BPE (Llama-3, Qwen2.5, Qwen3): the embedded SmolLM2 model's tokenizer;
* SentencePiece with byte fallback (Mistral, Phi-3; Gemma-style with Gemma's tokenizer class):
  a small one trained here with ``sentencepiece`` on the bundled profiles' text.

Every model has 2 layers and hidden size 64; ChatML is the chat template of all of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# family -> (config class, tokenizer kind, extra config). Output tied to the embeddings as in
# the small real models (Llama-3.2 1B/3B, Qwen2.5 0.5-3B, Qwen3 0.6-4B, Gemma), separate for
# Mistral and Phi-3.
TIED = {"tie_word_embeddings": True}
GEMMA = {**TIED, "query_pre_attn_scalar": 16}
ARCHS: dict[str, tuple[str, str, dict]] = {
    "llama": ("LlamaConfig", "bpe", TIED),
    "mistral": ("MistralConfig", "spm", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "bpe", TIED),
    "qwen3": ("Qwen3Config", "bpe", TIED),
    # Gemma scales queries by query_pre_attn_scalar, which equals head_dim in the real 2B-27B
    # models; llama.cpp scales by head_dim
    "gemma2": ("Gemma2Config", "gemma", {"sliding_window": 256, **GEMMA}),
    "gemma3": ("Gemma3TextConfig", "gemma", {"sliding_window": 256, **GEMMA}),
    "phi3": ("Phi3Config", "spm", {"original_max_position_embeddings": 1024}),
}


def corpus_text() -> str:
    from charlite.characters import bundled_dir

    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(bundled_dir().glob("*.md")))


def train_sentencepiece(folder: Path, kind: str, vocab_size: int = 700) -> Path:
    """A BPE SentencePiece model with byte fallback (the Llama-2 / Mistral / Gemma kind)."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text(corpus_text(), encoding="utf-8")
    prefix = folder / kind
    pieces = (
        {"unk_piece": "<unk>", "bos_piece": "<bos>", "eos_piece": "<eos>", "pad_piece": "<pad>"}
        if kind == "gemma"
        else {"pad_piece": "<pad>"}
    )
    spm.SentencePieceTrainer.train(
        **pieces,
        input=str(text),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        # ChatML's markers, and Phi-3's own (llama.cpp looks them up in a model named phi3)
        user_defined_symbols=["<|im_start|>", "<|im_end|>", "<|end|>", "<|endoftext|>"],
        pad_id=3,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def sp_model_path(work: Path, kind: str) -> Path | None:
    return None if kind == "bpe" else work / f"{kind}.model"


def make_tokenizer(kind: str, work: Path, embedded_gguf: Path | None):
    """The tokenizer of ``kind`` (bpe, spm, gemma); SentencePiece models are kept in ``work``."""
    import json

    from transformers import AutoTokenizer

    if kind == "bpe":
        assert embedded_gguf is not None
        tok = AutoTokenizer.from_pretrained(str(embedded_gguf.parent), gguf_file=embedded_gguf.name)
    else:
        sp = sp_model_path(work, kind)
        if not sp.is_file():
            train_sentencepiece(work, kind)
        folder = work / f"{kind}-tokenizer"
        folder.mkdir(exist_ok=True)
        shutil.copy(sp, folder / "tokenizer.model")
        cls = "GemmaTokenizer" if kind == "gemma" else "LlamaTokenizer"
        (folder / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": cls, "pad_token": "<pad>"}), encoding="utf-8"
        )
        tok = AutoTokenizer.from_pretrained(folder)
        tok.pad_token = "<pad>"
    tok.chat_template = CHATML
    return tok


def make_model_dir(
    arch: str,
    out: Path,
    tokenizer,
    *,
    seed: int = 0,
    sp_model: Path | None = None,
    pretrain_steps: int = 0,
):
    """Write a tiny random ``arch`` model with ``tokenizer`` to ``out`` (a ``hf:`` base folder),
    first trained ``pretrain_steps`` steps on the bundled profiles' text (see :func:`pretrain`)."""
    import torch
    import transformers

    config_cls, _kind, extra = ARCHS[arch]
    vocab = len(tokenizer)
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        initializer_range=0.1,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    config = getattr(transformers, config_cls)(**{**common, **extra})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if pretrain_steps:
        pretrain(model, tokenizer, pretrain_steps, seed=seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if sp_model is not None and not (out / "tokenizer.model").is_file():
        shutil.copy(sp_model, out / "tokenizer.model")
    return out


def pretrain(model, tokenizer, steps: int, *, seed: int = 0, seq_len: int = 128, batch: int = 4):
    """Train ``model`` a little on the bundled profiles' text, in place.

    A random model's next-token logits are nearly flat over the whole vocabulary: its top-1 is
    decided by near-ties that any rounding (Q8_0's 8-bit blocks) flips. A few dozen steps of
    language modelling give it the peaked predictions of a real model, so comparing top-1s
    measures the export, not the noise of a coin toss.
    """
    import torch

    ids = tokenizer(corpus_text()).input_ids
    rows = len(ids) // seq_len
    data = torch.tensor(ids[: rows * seq_len]).view(rows, seq_len)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        pick = data[torch.randint(rows, (batch,), generator=generator)]
        loss = model(input_ids=pick, labels=pick).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return float(loss)

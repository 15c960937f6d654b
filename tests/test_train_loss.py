"""The loss over labelled positions only (charlite/train/loss.py) is the full-logits loss.

Tiny random models (2 layers, hidden 32, vocabulary 211) of llama, gemma2 and gemma3 (both with
final logit softcapping), with LoRA layers whose B is not zero, so every adapter matrix gets a
gradient. A batch of 2 rows of different lengths (right padding) and different label masks,
and one packed row (padding-free, positions restarting at each example) as TRL builds it.
"""

from __future__ import annotations

import pytest

from charlite.train.loss import IGNORE_INDEX, kept_positions, labelled_loss

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

VOCAB = 211
PAD = 0


def _model(arch: str, seed: int = 0):
    import transformers
    from peft import LoraConfig, get_peft_model

    configs = {
        "llama": ("LlamaConfig", {}),
        "gemma2": ("Gemma2Config", {"final_logit_softcapping": 0.7, "query_pre_attn_scalar": 8}),
        "gemma3": (
            "Gemma3TextConfig",
            {"final_logit_softcapping": 0.7, "query_pre_attn_scalar": 8, "sliding_window": 8},
        ),
    }
    name, extra = configs[arch]
    config = getattr(transformers, name)(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        initializer_range=0.2,
        pad_token_id=PAD,
        **extra,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,  # B random, not zero: every LoRA matrix has a gradient
    )
    model = get_peft_model(model, lora)
    model.train()
    return model


def _padded_batch():
    """Two rows, 12 and 9 tokens, padded right; different labelled spans in each."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (2, 12), generator=generator)
    ids[1, 9:] = PAD
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    labels = torch.full((2, 12), IGNORE_INDEX)
    for row, spans in ((0, [(4, 9), (10, 11)]), (1, [(2, 4), (7, 9)])):
        for a, b in spans:
            labels[row, a:b] = ids[row, a:b]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _packed_batch():
    """One padding-free row of three examples, as TRL's collator packs them."""
    generator = torch.Generator().manual_seed(2)
    lengths = [7, 5, 9]
    ids = torch.randint(1, VOCAB, (1, sum(lengths)), generator=generator)
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    labels = torch.full_like(ids, IGNORE_INDEX)
    start = 0
    for n in lengths:
        labels[0, start + n - 3 : start + n] = ids[0, start + n - 3 : start + n]
        start += n
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def _full_loss(model, batch, num_items=None):
    """The reference: logits at every position, shifted cross-entropy summed over labels."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    total = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB).float(),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    count = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    return total / (count if num_items is None else num_items)


def _loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3"])
@pytest.mark.parametrize("make_batch", [_padded_batch, _packed_batch], ids=["padded", "packed"])
@pytest.mark.parametrize("num_items", [None, 23])
def test_labelled_loss_and_gradients_equal_the_full_logits_ones(arch, make_batch, num_items):
    model = _model(arch)
    batch = make_batch()
    full, full_grads = _loss_and_grads(model, lambda: _full_loss(model, batch, num_items))
    part, part_grads = _loss_and_grads(model, lambda: labelled_loss(model, batch, num_items).loss)
    assert abs(float(full) - float(part)) < 1e-5, (float(full), float(part))
    assert full_grads.keys() == part_grads.keys() and len(full_grads) == 12
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(grad, part_grads[name], rtol=1e-4, atol=1e-6), name


def test_logits_are_computed_only_where_the_next_token_is_labelled():
    model = _model("gemma3")
    batch = _padded_batch()
    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))
    try:
        parts = labelled_loss(model, batch)
    finally:
        handle.remove()
    # row 0 labels 4-8 and 10, row 1 labels 2-3 and 7-8: predicted from one position earlier
    expected = [1, 2, 3, 4, 5, 6, 7, 9]
    assert kept_positions(batch["labels"]).tolist() == expected
    assert seen == [(2, len(expected), VOCAB)]  # not (2, 12, VOCAB)
    assert int(parts.labelled) == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) == 10


def test_a_batch_without_labels_gives_a_differentiable_zero():
    model = _model("llama")
    batch = _padded_batch()
    batch["labels"][:] = IGNORE_INDEX
    parts = labelled_loss(model, batch)
    parts.loss.backward()
    assert float(parts.loss.detach()) == 0.0 and int(parts.labelled) == 0


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<eos>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    inner = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=inner, pad_token="<pad>", eos_token="<eos>")


@pytest.mark.parametrize("packing", [True, False])
def test_the_trainer_uses_it_and_logs_what_trl_logs(packing, tmp_path):
    """Through charlite's SFT trainer: the same loss, entropy and token accuracy as TRL's own
    compute_loss on the same batch, with the LM head applied to the labelled positions only."""
    pytest.importorskip("trl")
    from trl import SFTTrainer

    from charlite.train.config import TrainConfig
    from charlite.train.engines import EngineChoice
    from charlite.train.examples import Example
    from charlite.train.trainer import TokenCounter, build_trainer

    model = _model("gemma3")
    generator = torch.Generator().manual_seed(3)
    examples = []
    for n in (14, 9, 11):
        ids = torch.randint(2, VOCAB, (n,), generator=generator).tolist()
        examples.append(Example(ids, [IGNORE_INDEX] * (n - 4) + ids[n - 4 :]))
    cfg = TrainConfig(packing=packing, max_steps=1, epochs=1).resolved("cpu")
    cfg = cfg.model_copy(update={"batch_size": 3, "max_seq_len": 64})
    counter = TokenCounter()
    trainer = build_trainer(
        model,
        _tiny_tokenizer(),
        examples,
        cfg,
        EngineChoice("peft", "cpu", "test"),
        output_dir=tmp_path / "out",
        counter=counter,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda m, args, out: seen.append(out.shape[-2])
    )
    try:
        ours = trainer.compute_loss(model, dict(batch))
        mine = {k: list(v) for k, v in trainer._metrics["train"].items()}
        trainer._metrics["train"].clear()
        theirs = SFTTrainer.compute_loss(trainer, model, dict(batch))
        trl = {k: list(v) for k, v in trainer._metrics["train"].items()}
    finally:
        handle.remove()
    assert abs(float(ours) - float(theirs)) < 1e-5
    labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert labelled == 12 and seen[0] == len(kept_positions(batch["labels"]))
    assert seen[0] < batch["input_ids"].shape[1] - 1  # fewer positions than the sequence has
    for key in ("entropy", "mean_token_accuracy"):
        assert mine[key] == pytest.approx(trl[key], abs=1e-5), key
    assert counter.trained == 12

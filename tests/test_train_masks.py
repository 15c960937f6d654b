"""charlite's label masks reach TRL's loss: the batches the SFT trainer builds carry our labels
(system and user text at -100), not a copy of ``input_ids`` as TRL before 0.19 made.

A tiny random llama model and real TRL, packing on (charlite's default) and off.
"""

from __future__ import annotations

import pytest
from arch_models import make_model_dir, make_tokenizer

pytestmark = pytest.mark.slow
pytest.importorskip("trl")


@pytest.mark.parametrize("packing", [True, False])
def test_masks_reach_the_loss(packing, tmp_path, embedded_path):
    import torch
    from transformers import AutoModelForCausalLM

    from charlite.train.config import TrainConfig
    from charlite.train.engines import EngineChoice
    from charlite.train.examples import IGNORE, Example
    from charlite.train.trainer import build_trainer

    tok = make_tokenizer("bpe", tmp_path, embedded_path)
    folder = make_model_dir("llama", tmp_path / "llama", tok)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    examples = []
    for i in range(4):
        ids = tok(f"system text {i} user asks something, and the answer is {i * 7}").input_ids
        half = len(ids) // 2
        examples.append(Example(ids, [IGNORE] * half + ids[half:]))
    cfg = TrainConfig(packing=packing, max_steps=1, epochs=1).resolved("cpu")
    cfg = cfg.model_copy(update={"batch_size": 4, "max_seq_len": 128})
    trainer = build_trainer(
        model, tok, examples, cfg, EngineChoice("peft", "cpu", "test"), output_dir=tmp_path / "out"
    )
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"].flatten().tolist()
    ids = batch["input_ids"].flatten().tolist()
    masked = [i for i, lab in enumerate(labels) if lab == IGNORE]
    # every example's first half is masked (no -100 would mean labels = input_ids)
    want = sum(len(e.labels) - e.trained_tokens for e in examples)
    assert len([i for i in masked if i < len(ids)]) >= want
    kept = [(a, b) for a, b in zip(ids, labels, strict=True) if b != IGNORE]
    assert kept and all(a == b for a, b in kept)
    trained = sorted(x for e in examples for x in e.labels if x != IGNORE)
    assert sorted(b for _, b in kept) == trained
    # and the loss is the model's loss over exactly those labels
    with torch.no_grad():
        out = trainer.compute_loss(model, {k: v for k, v in batch.items()})
        logits = model(
            input_ids=batch["input_ids"],
            **{k: batch[k] for k in ("position_ids", "attention_mask") if k in batch},
        ).logits
    shift = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE,
    )
    assert torch.isclose(out, shift, rtol=1e-3), (float(out), float(shift))

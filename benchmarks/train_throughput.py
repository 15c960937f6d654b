"""Training throughput: `charlite train --engine peft` against a plain TRL SFT run.

Both train the same LoRA (r=16 on all projections) over the same base (the embedded SmolLM2,
dequantized), the same examples (Beethoven experiences of varied length built from his
profile) and the same machine, one epoch each, in this one process. Plain TRL gets the
conversational dataset and its defaults (examples padded to the longest of each batch of 4);
charlite packs examples into sequences of --max-seq-len without padding.

Measured: real (non-padding) tokens per second of training (the trainer's own loop, not model
loading), and the share of padding tokens. A warm-up run of each, then BENCH_REPEATS (default 3)
alternating runs; medians. The last line is `train_throughput: RATIO` (charlite / TRL).

    .venv/bin/python benchmarks/train_throughput.py
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = int(os.environ.get("BENCH_EXAMPLES", "12"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MAX_LEN = 1024
TRL_BATCH = 4


def threads() -> int:
    if os.environ.get("BENCH_THREADS"):
        return int(os.environ["BENCH_THREADS"])
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] >= cores  # OpenMP threads fight on a busy machine
    return 1 if busy else min(cores, 4)


def make_dataset(slug: str, n: int) -> list:
    """Experiences of 1 to 6 exchanges whose lines are sentences of the character's profile."""
    from charlite.characters import get_profile
    from charlite.experience.schemas import Experience
    from charlite.files import JsonlWriter
    from charlite.home import CharacterPaths

    profile = get_profile(slug)
    sentences = [s.strip() + "." for p in profile.paragraph_texts() for s in p.split(". ") if s]
    rng = random.Random(7)
    records = []
    for i in range(n):
        dialogue = []
        for _ in range(rng.randint(1, 6)):
            dialogue.append({"role": "Man", "content": "Tell me: " + rng.choice(sentences)})
            answer = " ".join(rng.sample(sentences, rng.randint(1, 3)))
            dialogue.append({"role": profile.short_name, "action": "speaking", "content": answer})
        records.append(
            Experience(
                id=f"b{i}",
                location="Vienna",
                status=f"A visitor talks with {profile.short_name}.",
                dialogue=dialogue,
            )
        )
    folder = CharacterPaths.of(slug).dataset("bench")
    folder.mkdir(parents=True, exist_ok=True)
    with JsonlWriter(folder / "experiences.jsonl") as out:
        for r in records:
            out.write(r.model_dump(mode="json"))
    return records


def run_charlite(tag: str, max_steps: int | None = None) -> tuple[float, float]:
    from charlite.train import TrainConfig, train

    cfg = TrainConfig(
        engine="peft",
        dataset="bench",
        epochs=1,
        max_steps=max_steps,
        max_seq_len=MAX_LEN,
        batch_size=1,
        grad_accum=1,
        lr=2e-4,
        warmup=0,
        save_steps=100_000,
        threads=threads(),
    )
    run = train("beethoven", cfg, run_id=f"bench-{tag}")
    tokens = run.manifest["tokens"]
    return tokens["real"] / run.manifest["train_time_s"], tokens["padding_share"]


def run_trl(base_dir: Path, records, out_dir: Path, max_steps: int | None = None):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from charlite.characters import get_profile
    from charlite.train.examples import experience_messages

    torch.set_num_threads(threads())
    profile = get_profile("beethoven")
    data = Dataset.from_dict({"messages": [experience_messages(profile, r) for r in records]})
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    counts = {"positions": 0, "real": 0}

    class Counting(SFTTrainer):
        def compute_loss(self, model, inputs, *a, **kw):
            counts["positions"] += int(inputs["input_ids"].numel())
            counts["real"] += int(inputs["attention_mask"].sum())
            return super().compute_loss(model, inputs, *a, **kw)

    args = SFTConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=TRL_BATCH,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        max_steps=max_steps or -1,
        learning_rate=2e-4,
        max_length=MAX_LEN,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
    )
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=16,
        lora_alpha=32,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    )
    trainer = Counting(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # no log dicts on stdout
    began = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - began
    padding = 1 - counts["real"] / counts["positions"] if counts["positions"] else 0.0
    return counts["real"] / seconds, padding


def main() -> None:
    home = Path(os.environ.get("CHARLITE_HOME") or tempfile.mkdtemp(prefix="charlite-bench-"))
    os.environ["CHARLITE_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    from charlite.train.base import prepare_base

    base = prepare_base("embedded")
    records = make_dataset("beethoven", EXAMPLES)
    print(
        f"{EXAMPLES} examples, base {base.spec} ({base.path.name}), {threads()} threads, "
        f"{REPEATS} repetitions",
        file=sys.stderr,
    )

    run_charlite("warmup", max_steps=1)
    run_trl(base.path, records, home / "trl-warmup", max_steps=1)
    ours, theirs, our_pad, their_pad = [], [], [], []
    for rep in range(REPEATS):
        rate, pad = run_charlite(str(rep))
        ours.append(rate)
        our_pad.append(pad)
        rate, pad = run_trl(base.path, records, home / f"trl-{rep}")
        theirs.append(rate)
        their_pad.append(pad)
        print(
            f"  rep {rep}: charlite {ours[-1]:.0f} tok/s, TRL {theirs[-1]:.0f} tok/s",
            file=sys.stderr,
        )

    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"charlite train --engine peft (packed): {a:.0f} tokens/s, padding {100 * statistics.median(our_pad):.1f}%"
    )
    print(
        f"plain TRL SFT (batch {TRL_BATCH}, padded): {b:.0f} tokens/s, padding {100 * statistics.median(their_pad):.1f}%"
    )
    print(f"train_throughput: {a / b:.2f}")


if __name__ == "__main__":
    main()

"""End to end on the CPU with the embedded base: a made-up fact is learned, and Ctrl-C then
--resume continue a run at its saved step. Real training steps, real files, a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_train_support as support
from click.testing import CliRunner
from test_train_support import (
    FACT,
    QUESTION,
    SCENE,
    cpu_threads,
    fact_records,
    write_dataset,
)

from charlite import roleplay
from charlite.cli import cli
from charlite.profile import Scene
from charlite.train import latest_run, load_run

pytestmark = pytest.mark.slow
shared_bases = support.shared_bases  # fixtures
embedded_base = support.embedded_base
pytest.importorskip("peft")


def greedy_answer(model, tokenizer, question: str) -> str:
    import torch

    messages = roleplay.to_messages(
        "Beethoven",
        "Ludwig van Beethoven",
        Scene(location=SCENE[0], status=SCENE[1]),
        [roleplay.Turn("Man", question)],
    )
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=30, do_sample=False)
    return tokenizer.decode(out[0][enc["input_ids"].shape[1] :])


def test_training_teaches_beethoven_a_favourite_colour(embedded_base):
    write_dataset("beethoven", fact_records(8))
    result = CliRunner().invoke(
        cli,
        [
            "train", "beethoven", "--engine", "peft", "--run", "colour",
            "--max-steps", "8", "--lr", "3e-3", "--grad-accum", "1", "--warmup", "0",
            "--threads", str(cpu_threads()),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "engine: peft on cpu" in result.stderr
    assert "trained beethoven: run colour" in result.stdout

    run = load_run("beethoven", "colour")
    assert latest_run("beethoven") == run and run.completed
    m = run.manifest
    assert m["format"] == 1 and m["status"] == "completed" and m["engine"] == "peft"
    assert m["base"]["spec"] == "embedded" and m["base"]["gguf"].endswith(".gguf")
    assert Path(m["base"]["path"]) == embedded_base
    assert m["dataset"]["name"] == "default" and m["dataset"]["experiences"] == 8
    assert m["config"]["max_steps"] == 8 and m["steps"] == {"done": 8, "total": 8}
    assert m["tokens"]["trained"] > 0 and m["tokens"]["padding_share"] < 0.05
    assert m["lora"]["r"] == 16 and "down_proj" in m["lora"]["target_modules"]
    assert m["final_loss"] < 1.0 and m["wall_time_s"] > 0
    assert m["versions"]["peft"] and m["versions"]["trl"]
    assert {p.name for p in run.adapter_dir.iterdir()} >= {
        "adapter_model.safetensors",
        "adapter_config.json",
    }
    assert not run.checkpoints_dir.exists()
    metrics = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in metrics] == list(range(1, 9))
    assert metrics[-1]["loss"] < metrics[0]["loss"]

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.base_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(run.base_dir), run.adapter_dir
    )
    model.eval()
    tuned = greedy_answer(model, tokenizer, QUESTION)
    with model.disable_adapter():
        base = greedy_answer(model, tokenizer, QUESTION)
    assert FACT in tuned.lower(), tuned
    assert "periwinkle" not in base.lower() and "vermilion" not in base.lower(), base
    assert tuned.startswith("(speaking)") or tuned.startswith("(thinking)")  # the role-play format


def _charlite() -> list[str]:
    script = Path(sys.executable).with_name("charlite")
    return [str(script)] if script.exists() else [sys.executable, "-m", "charlite"]


def _steps(path: Path) -> list[int]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return out


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_there(embedded_base, charlite_home):
    write_dataset("beethoven", fact_records(3))
    run_dir = charlite_home / "characters" / "beethoven" / "runs" / "r1"
    env = {**os.environ, "CHARLITE_HOME": str(charlite_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            *_charlite(), "train", "beethoven", "--engine", "peft", "--run", "r1",
            "--max-steps", "12", "--max-seq-len", "160", "--grad-accum", "1",
            "--save-steps", "100", "--threads", str(cpu_threads()),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if any(s >= 2 for s in _steps(run_dir / "metrics.jsonl")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert "training stopped at step" in line and "--resume r1" in line

    run = load_run("beethoven", "r1")
    saved = run.manifest["steps"]["done"]
    assert run.status == "interrupted" and 2 <= saved < 12
    assert run.latest_checkpoint() == run.checkpoints_dir / f"checkpoint-{saved}"
    assert not run.adapter_dir.exists()
    assert _steps(run.metrics_path) == list(range(1, saved + 1))
    assert latest_run("beethoven") is None  # nothing completed yet

    result = CliRunner().invoke(cli, ["train", "beethoven", "--resume", "r1"])
    assert result.exit_code == 0, result.output
    assert f"training: 12 steps (from step {saved})" in result.stderr
    run = load_run("beethoven", "r1")
    assert run.completed and run.manifest["steps"] == {"done": 12, "total": 12}
    assert _steps(run.metrics_path) == list(
        range(1, 13)
    )  # each step once: continued, not restarted
    metrics = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    elapsed = [r["elapsed_s"] for r in metrics]
    assert elapsed == sorted(elapsed)  # the clock continues across the restart too
    assert run.manifest["tokens"]["real"] > 0 and run.manifest["config"]["max_steps"] == 12
    assert latest_run("beethoven") == run

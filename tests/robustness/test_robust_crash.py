"""kill -9 at random points, with fixed seeds: nothing that was written is lost or torn, and
rerunning the same command (or --resume, or --session) finishes the job.

* generate: several kills per seed on one dataset, one torn line added by hand; the last rerun
  completes with no duplicate id and no torn line (teacher: helpers.ReplayTeacher, so that a
  dozen kill points fit in seconds; the pipeline, stores and lock are charlite's own);
* chat: stdin mode with several lines, killed mid-way; the earlier turns are intact, the
  database passes PRAGMA integrity_check, and the session continues;
* train: killed after its first checkpoint; --resume RUN continues from the last checkpoint;
* export: killed while writing; no partial file under a final name; the rerun succeeds.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import (
    ReplayTeacher,
    ids_unique,
    jsonl_whole,
    kill_when,
    popen_cli,
    run_cli,
)

from charlite.experience.dataset import Dataset
from charlite.files import read_jsonl

pytestmark = pytest.mark.slow
SEEDS = [11, 23, 37]


def _tried(text: str) -> None:
    print(f"kill point: {text}")  # shown with -s / -rP


def _stores_whole_but_last(path: Path) -> list[dict]:
    """After a kill: every line but the last parses; the last may be torn (it is repaired)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    for line in lines[:-1]:
        if line.strip():
            json.loads(line)  # a torn line in the middle would be lost data
    return read_jsonl(path)


# -------------------------------------------------------------------------------------------
# generate

GENERATE = ["generate", "beethoven", "--paragraphs", "6", "--scenes", "2", "--protective", "4",
            "--workers", "2", "--quiet"]  # fmt: skip
EXPECTED = {"scenes": 12, "experiences": 12, "protective": 4}


@pytest.mark.parametrize("seed", SEEDS)
def test_generate_killed_again_and_again(charlite_home, seed):
    rng = random.Random(seed)
    ds = Dataset("beethoven")
    total = sum(EXPECTED.values())

    def count() -> int:
        return sum(len(read_jsonl(ds.file(s))) for s in EXPECTED)

    with ReplayTeacher(delay=0.03, seed=seed) as teacher:
        for kill in range(4):
            target = rng.randint(0, total - 1)
            delay = rng.uniform(0.0, 0.08)
            proc = popen_cli(*GENERATE, "--teacher", teacher.spec, home=charlite_home)
            killed = kill_when(proc, lambda t=target: count() >= t, delay=delay, timeout=120)
            if killed:
                _tried(f"generate seed {seed} #{kill}: after {target} records + {delay:.3f}s")
            for stage in EXPECTED:
                ids_unique(_stores_whole_but_last(ds.file(stage)))
            if kill == 1:  # a crash in the middle of a write: half a record, no newline
                with open(ds.file("experiences"), "ab") as fh:
                    fh.write(b'{"id": "torn-by-a-crash", "kind": "exp')
        final = run_cli(*GENERATE, "--teacher", teacher.spec, home=charlite_home, timeout=300)
    assert final.returncode == 0, final.output
    assert "Traceback" not in final.output
    assert "dropped a torn last line from experiences.jsonl" in final.stderr
    manifest = ds.read_manifest()
    assert manifest["status"] == "complete", final.stdout
    assert manifest["counts"] == manifest["expected"] == EXPECTED
    stored = {stage: jsonl_whole(ds.file(stage)) for stage in EXPECTED}  # no torn line left
    for stage, records in stored.items():
        ids_unique(records)
        assert len(records) == EXPECTED[stage]
    assert sorted(e["scene_id"] for e in stored["experiences"]) == sorted(
        s["id"] for s in stored["scenes"]
    )
    assert all(r["id"] != "torn-by-a-crash" for r in stored["experiences"])


# -------------------------------------------------------------------------------------------
# chat

LINES = [f"Tell me about your symphony number {i}." for i in range(1, 7)]


def _turns(db_path: Path) -> list[tuple[str, str, str]]:
    if not db_path.exists():
        return []
    db = sqlite3.connect(db_path, timeout=30)
    try:
        return db.execute("SELECT session_id, role, content FROM turns ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        db.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_chat_killed_mid_conversation(charlite_home, seed):
    rng = random.Random(seed)
    db_path = charlite_home / "history.sqlite"
    target = rng.randint(0, 2 * len(LINES) - 2)  # stored turns before the kill
    delay = rng.uniform(0.0, 1.0)
    proc = popen_cli(
        "chat", "beethoven", "--max-tokens", "6", "--seed", str(seed), home=charlite_home,
        stdin=subprocess.PIPE,
    )  # fmt: skip
    proc.stdin.write(("\n".join(LINES) + "\n").encode())
    proc.stdin.flush()
    try:
        killed = kill_when(proc, lambda: len(_turns(db_path)) >= target, delay=delay, timeout=600)
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed, "the chat ended before the kill point"
    _tried(f"chat seed {seed}: after {target} turns + {delay:.2f}s")

    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    turns = _turns(db_path)
    assert len(turns) >= target
    sessions = {sid for sid, _, _ in turns}
    assert len(sessions) <= 1
    users = [c for _, role, c in turns if role == "user"]
    assert users == LINES[: len(users)]  # the earlier turns, in order, unchanged
    roles = [role for _, role, _ in turns]
    assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"] * (len(roles) % 2)
    assert all(c.strip() for _, role, c in turns if role == "assistant")
    if not sessions:
        return
    (sid,) = sessions
    out = run_cli("chat", "beethoven", "--session", sid, "-m", "And now?", "--max-tokens", "6")
    assert out.returncode == 0, out.output
    after = _turns(db_path)
    assert after[: len(turns)] == turns and [r for _, r, _ in after[len(turns) :]] == [
        "user",
        "assistant",
    ]


# -------------------------------------------------------------------------------------------
# train


def _train_records(n: int = 4) -> list[dict]:
    out = []
    for i in range(n):
        out.append(
            {
                "id": f"crash-{i}",
                "kind": "experience",
                "location": "Vienna, 1820",
                "status": "A visitor asks Beethoven about his work.",
                "dialogue": [
                    {"role": "Visitor", "content": f"What are you writing now, number {i}?"},
                    {"role": "Beethoven", "action": "thinking", "content": "Another question."},
                    {"role": "Beethoven", "action": "speaking", "content": f"Symphony {i}."},
                ],
            }
        )
    return out


@pytest.fixture(scope="module")
def prepared_base(tmp_path_factory) -> Path:
    """The embedded base prepared once (shared with tests/test_train_support.py's fixture)."""
    root = tmp_path_factory.getbasetemp() / "train-shared-home"
    bases = root / "cache" / "bases"
    if not any(bases.glob("*/base.json")):
        env = {**os.environ, "CHARLITE_HOME": str(root)}
        code = "from charlite.train.base import prepare_base; prepare_base('embedded')"
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=900)
    return bases


def _link_base(home: Path, bases: Path) -> None:
    (home / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache" / "bases").symlink_to(bases, target_is_directory=True)


def _metric_steps(path: Path) -> list[int]:
    return [r["step"] for r in _stores_whole_but_last(path)]


TRAIN = ["train", "beethoven", "--engine", "peft", "--max-steps", "8", "--save-steps", "2",
         "--max-seq-len", "192", "--grad-accum", "1", "--threads", "1"]  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
def test_train_killed_after_a_checkpoint_resumes(charlite_home, prepared_base, seed):
    from charlite.files import JsonlWriter
    from charlite.train import load_run

    rng = random.Random(seed)
    _link_base(charlite_home, prepared_base)
    folder = charlite_home / "characters" / "beethoven" / "data" / "default"
    with JsonlWriter(folder / "experiences.jsonl") as out:
        out.write_many(_train_records())
    run_id = f"crash-{seed}"
    run_dir = charlite_home / "characters" / "beethoven" / "runs" / run_id
    target = rng.randint(2, 5)  # kill once this step is logged (or a checkpoint being saved)
    delay = rng.uniform(0.0, 0.8)
    proc = popen_cli(*TRAIN, "--run", run_id, home=charlite_home)

    def ready() -> bool:
        checkpointed = any((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))
        steps = _metric_steps(run_dir / "metrics.jsonl") if checkpointed else []
        return bool(steps) and steps[-1] >= target

    killed = kill_when(proc, ready, delay=delay, timeout=900)
    assert killed, proc.stderr.read().decode()[-2000:]
    _tried(f"train seed {seed}: after a checkpoint and step {target} + {delay:.2f}s")
    run = load_run("beethoven", run_id)  # the manifest is whole JSON
    assert run.status == "running" and not run.completed
    checkpoint = run.latest_checkpoint()
    assert checkpoint is not None
    saved = int(checkpoint.name.split("-")[1])
    before = _metric_steps(run.metrics_path)
    assert before[:saved] == list(range(1, saved + 1))

    out = run_cli("train", "beethoven", "--resume", run_id, timeout=900)
    assert out.returncode == 0, out.output[-3000:]
    assert f"(from step {saved})" in out.stderr
    run = load_run("beethoven", run_id)
    assert run.completed and run.manifest["steps"] == {"done": 8, "total": 8}
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    steps = [r["step"] for r in jsonl_whole(run.metrics_path)]
    assert steps == list(range(1, 9)), steps  # each step once: continued, not restarted


# -------------------------------------------------------------------------------------------
# export


def _stderr_lines(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    def pump():
        for raw in proc.stderr:
            lines.append(raw.decode("utf-8", "replace"))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _check_exports(home: Path) -> None:
    """Under a final name there is only a complete export: every file the manifest lists."""
    from charlite.gguf import check_gguf

    exports = home / "characters" / "beethoven" / "exports"
    if not exports.exists():
        return
    for folder in exports.iterdir():
        if folder.name.startswith("."):
            continue  # a staging folder: not a final name
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["smoke_ok"] is True
        listed = {f["name"]: f for f in manifest["files"]}
        assert {p.name for p in folder.iterdir()} == set(listed) | {"manifest.json"}
        for name, entry in listed.items():
            path = folder / name
            assert path.stat().st_size == entry["bytes"], name
            if name.endswith(".gguf"):
                check_gguf(path)


# (seed, the progress line after which the kill comes, extra flags): the merged export writes
# ~100 MB (merge, then quantize); its smoke tests are the slow part, so two seeds export only
# the adapter.
EXPORTS = [
    (11, "merging the adapter", []),
    (23, "writing the LoRA adapter", ["--adapter-only"]),
    (37, "smoke test", ["--adapter-only"]),
]


@pytest.mark.parametrize(("seed", "phase", "flags"), EXPORTS)
def test_export_killed_while_writing(charlite_home, embedded_path, tmp_path, seed, phase, flags):
    from helpers_export import random_adapter, write_run

    rng = random.Random(seed)
    # an adapter of zeros: the export's replies are the base's, so whether the smoke test passes
    # cannot depend on how this machine's kernels round a near-zero adapter (issue 16)
    adapter = random_adapter(tmp_path / "adapter", seed=seed, std=0.0)
    write_run(charlite_home, "beethoven", "r1", adapter=adapter, base_gguf=embedded_path)
    delay = rng.uniform(0.0, 1.5)
    lines: list[str] = []
    proc = popen_cli("export", "beethoven", "--run", "r1", *flags, home=charlite_home)
    pump = _stderr_lines(proc, lines)
    killed = kill_when(proc, lambda: any(phase in ln for ln in lines), delay=delay, timeout=900)
    pump.join(timeout=10)
    assert killed, "".join(lines)[-2000:]
    _tried(f"export seed {seed}: {phase!r} + {delay:.2f}s")
    _check_exports(charlite_home)
    assert not (charlite_home / "characters" / "beethoven" / "exports" / "r1").exists()

    out = run_cli("export", "beethoven", "--run", "r1", *flags, timeout=1800)
    assert out.returncode == 0, out.output[-3000:]
    _check_exports(charlite_home)
    final = charlite_home / "characters" / "beethoven" / "exports" / "r1"
    assert (final / "manifest.json").is_file()
    leftovers = [p.name for p in final.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"staging folders of the killed export were left: {leftovers}"

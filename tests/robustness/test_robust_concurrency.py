"""Two charlite processes at once: chats share the history database and lose nothing; a second
writer of a dataset is refused with one clear line instead of interleaving records."""

from __future__ import annotations

import sqlite3
import subprocess
import time

import pytest
from helpers import (
    FIXTURES,
    ReplayTeacher,
    assert_one_error,
    ids_unique,
    jsonl_whole,
    popen_cli,
    run_cli,
)

from charlite.experience.dataset import Dataset

GENERATE = ["generate", "beethoven", "--paragraphs", "4", "--scenes", "2", "--protective", "3",
            "--quiet"]  # fmt: skip
EXPECTED = {"scenes": 8, "experiences": 8, "protective": 3}


def _records(ds: Dataset) -> int:
    return sum(len(jsonl_whole(ds.file(s))) for s in EXPECTED if ds.file(s).exists())


def _wait(cond, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_second_generate_on_a_dataset_is_refused(charlite_home):
    ds = Dataset("beethoven")
    with ReplayTeacher(delay=0.25, seed=1) as teacher:
        first = popen_cli(*GENERATE, "--teacher", teacher.spec, home=charlite_home)
        try:
            _wait(lambda: _records(ds) >= 1, first)
            second = run_cli(*GENERATE, "--teacher", teacher.spec, home=charlite_home)
            busy = "dataset 'default' of beethoven is being written by another charlite process"
            line = assert_one_error(second, busy, f"pid {first.pid}")
            assert "another --dataset" in line  # and what to do
            fixture = str(FIXTURES / "character_llm" / "experiences.json")
            importing = run_cli("data", "import", "beethoven", fixture, home=charlite_home)
            assert_one_error(importing, busy)
            # another dataset of the same character is free
            teacher.delay = 0.01
            other = run_cli(
                *GENERATE[:2], "--paragraphs", "1", "--protective", "0", "--quiet",
                "--dataset", "other", "--teacher", teacher.spec, home=charlite_home,
            )  # fmt: skip
            assert other.returncode == 0, other.output
            out, err = first.communicate(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    assert first.returncode == 0, err
    manifest = ds.read_manifest()
    assert manifest["status"] == "complete" and manifest["counts"] == EXPECTED
    for stage in EXPECTED:
        ids_unique(jsonl_whole(ds.file(stage)))
    assert not any(s.get("file") for s in manifest.get("sources", []))  # the import never ran


def test_lock_of_a_killed_generate_is_released(charlite_home):
    ds = Dataset("beethoven")
    with ReplayTeacher(delay=0.2, seed=2) as teacher:
        proc = popen_cli(*GENERATE, "--teacher", teacher.spec, home=charlite_home)
        try:
            _wait(lambda: _records(ds) >= 2, proc)
        finally:
            proc.kill()
            proc.wait()
        teacher.delay = 0.01
        out = run_cli(*GENERATE, "--teacher", teacher.spec, home=charlite_home)
    assert out.returncode == 0, out.output
    assert ds.read_manifest()["status"] == "complete"


@pytest.mark.slow
def test_two_chats_writing_one_history_lose_nothing(charlite_home):
    lines = {
        "a": [f"Question {i} from the first visitor?" for i in range(3)],
        "b": [f"Question {i} from the second visitor?" for i in range(3)],
    }
    procs = {
        key: popen_cli(
            "chat",
            "beethoven",
            "--max-tokens",
            "6",
            "--seed",
            "1",
            home=charlite_home,
            stdin=subprocess.PIPE,
        )  # fmt: skip
        for key in lines
    }
    results = {}
    for key, proc in procs.items():
        proc.stdin.write(("\n".join(lines[key]) + "\n").encode())
        proc.stdin.close()
    for key, proc in procs.items():
        try:
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        results[key] = (proc.returncode, proc.stdout.read().decode(), proc.stderr.read().decode())
        assert proc.returncode == 0, results[key]
        assert len(results[key][1].strip().splitlines()) >= 3
    db = sqlite3.connect(charlite_home / "history.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        sessions = [r[0] for r in db.execute("SELECT id FROM sessions WHERE character='beethoven'")]
        assert len(sessions) == 2
        seen = []
        for sid in sessions:
            turns = db.execute(
                "SELECT role, content FROM turns WHERE session_id=? ORDER BY id", (sid,)
            ).fetchall()
            assert [r for r, _ in turns] == ["user", "assistant"] * 3
            seen.append([c for r, c in turns if r == "user"])
        assert sorted(seen) == sorted(lines.values())  # every line, in order, once
    finally:
        db.close()

"""`charlite interview` end to end with the embedded model (and `charlite eval` on a multi-turn run).

Replies of a 135M model mean nothing; what is checked is the plumbing: the results file, the
paper's reply format, resuming, interrupting, the interviewer and the judge.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlite.cli import cli
from charlite.eval.judge import MULTI_DIMENSIONS
from charlite.eval.results import load_results, split_reply
from charlite.files import read_jsonl

pytestmark = pytest.mark.slow
CHARLITE = str(Path(sys.executable).with_name("charlite"))
FAST = ["--max-tokens", "24"]


def _run(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def _check_items(data):
    for item in data["items"]:
        assert isinstance(item["reply"], list)
        for line in item["reply"]:
            assert line["role"] == data["character"]["short_name"]
            assert line["action"] in ("(thinking)", "(speaking)")
            assert line["content"].strip()
        assert (item["thinking"], item["speaking"]) == split_reply(item["reply"])
        assert item["seconds"] > 0
        assert 0 <= item["continuations"] <= 2


def test_single_turn_interview_writes_results_and_continues(tmp_path):
    out = tmp_path / "beethoven.json"
    first = _run("interview", "beethoven", "--limit", "1", "--no-facts", *FAST, "-o", str(out))
    assert "1 answers (1 new, 1 of 51 questions)" in first.output
    data = json.loads(out.read_text())
    assert data["format"] == 1 and data["kind"] == "interview" and data["mode"] == "single"
    assert data["character"]["slug"] == "beethoven"
    assert data["model"]["spec"] == "embedded" and data["model"]["prompted"] is True
    assert data["model"]["artifact"]["kind"] == "base"
    assert data["setting"]["location"] == "Coffee Shop - Afternoon"
    assert "21st century" in data["setting"]["status"]
    assert len(data["questions"]) == 51 and data["complete"] is False
    assert data["params"]["max_tokens"] == 24 and data["params"]["seed"] == 0
    assert data["timings"]["answers"] == 1 and data["timings"]["total_seconds"] > 0
    _check_items(data)
    answered = data["items"][0]

    second = _run("interview", "beethoven", "--limit", "2", "--no-facts", *FAST, "-o", str(out))
    assert "2 answers (1 new" in second.output
    data = json.loads(out.read_text())
    assert [it["index"] for it in data["items"]] == [0, 1]
    assert data["items"][0] == answered, "a finished answer is never asked again"
    _check_items(data)
    # the file is what `charlite eval` reads
    res = load_results(out)
    assert res.source_format == "charlite" and res.character == "beethoven" and len(res.items) == 2


def test_interrupt_keeps_finished_answers_and_a_rerun_continues(tmp_path):
    out = tmp_path / "socrates.json"
    cmd = [CHARLITE, "interview", "socrates", "--limit", "3", "--no-facts", *FAST, "-o", str(out)]
    # one question at a time: with several decoding together all three can finish before the
    # first is saved, leaving nothing to interrupt
    env = {**os.environ, "CHARLITE_PARALLEL": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and json.loads(out.read_text())["items"]:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the interview ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted:" in stderr and "finished answers are kept in" in stderr
    kept = json.loads(out.read_text())["items"]
    assert 1 <= len(kept) <= 3
    assert not list(tmp_path.glob(".socrates.json.tmp-*")), "no temporary file is left behind"

    _run("interview", "socrates", "--limit", "2", "--no-facts", *FAST, "-o", str(out))
    data = json.loads(out.read_text())
    assert [it["index"] for it in data["items"]][:2] == [0, 1]
    assert data["items"][0] == kept[0]


def test_multi_turn_interview_with_interviewer_and_judge(tmp_path):
    out = tmp_path / "multi.json"
    result = _run(
        "interview",
        "beethoven",
        "--turns",
        "2",
        "--reask-every",
        "2",
        "--limit",
        "1",
        *FAST,
        "-o",
        str(out),
        "--show",
    )
    assert "Man: Where did you grow up" in result.output
    data = json.loads(out.read_text())
    assert data["mode"] == "multi" and data["turns"] == 2
    assert data["interviewer"]["spec"] == "embedded" and data["interviewer"]["reask_every"] == 2
    item = data["items"][0]
    ex = item["exchanges"]
    assert len(ex) == 3
    assert ex[0]["question"] == item["question"] and ex[0]["source"] == "set"
    assert ex[1]["source"] in ("model", "fallback") and ex[1]["question"] != ex[0]["question"]
    assert ex[2]["source"] == "reask" and ex[2]["reask_of"] == 0
    assert ex[2]["question"] == ex[0]["question"]
    for e in ex:
        assert "beethoven" not in e["question"].lower()
        assert all(line["action"] in ("(thinking)", "(speaking)") for line in e["reply"])
    assert "interviewer_seconds" in ex[1]

    report = tmp_path / "rep"
    _run(
        "eval",
        str(out),
        "--judge",
        "embedded",
        "--limit",
        "1",
        "--max-tokens",
        "64",
        "--attempts",
        "2",
        "--report",
        str(report),
    )
    scores = read_jsonl(report / "scores.jsonl")
    assert [r["dimension"] for r in scores] == list(MULTI_DIMENSIONS)
    for r in scores:
        assert (r["status"] == "scored" and 1 <= r["score"] <= 7) or (
            r["status"] == "unscored" and r["score"] is None
        )
    md = (report / "report.md").read_text()
    assert "| stability |" in md
    checks = read_jsonl(report / "checks.jsonl")
    assert [c["exchange"] for c in checks] == [0, 1, 2], "every reply of the interview is checked"
    assert (report / "scores.png").stat().st_size > 1000

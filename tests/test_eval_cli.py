"""Bad input to `charlite interview` and `charlite eval`: one clear line, non-zero exit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from charlite.cli import cli
from charlite.files import read_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
UNREACHABLE = "openai:x@http://127.0.0.1:9/v1"


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


def _one_error_line(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_interview_unknown_question_file_format(tmp_path):
    bad = tmp_path / "questions.csv"
    bad.write_text("topic,question\n1,Where were you born?\n")
    line = _one_error_line(
        _invoke("interview", "beethoven", "--questions", str(bad), "-o", str(tmp_path / "r.json"))
    )
    assert "unknown question file format" in line
    assert not (tmp_path / "r.json").exists()


def test_interview_results_file_given_as_questions(tmp_path):
    line = _one_error_line(
        _invoke(
            "interview", "beethoven", "--questions", str(FIXTURES / "Beethoven_paper_result.json")
        )
    )
    assert "results file, not a question file" in line


def test_interview_unknown_character():
    line = _one_error_line(_invoke("interview", "beethovn"))
    assert "no character 'beethovn'" in line and "did you mean 'beethoven'" in line


def test_interview_refuses_to_continue_another_characters_file(tmp_path):
    out = tmp_path / "r.json"
    shutil.copy(FIXTURES / "beethoven_examples.json", out)
    line = _one_error_line(
        _invoke("interview", "newton", "--limit", "1", "-o", str(out), "--model", "embedded")
    )
    assert "is an interview of 'beethoven', not 'newton'" in line
    assert json.loads(out.read_text())["character"]["slug"] == "beethoven"  # untouched


def test_eval_empty_results_file(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    line = _one_error_line(_invoke("eval", str(empty), "--no-judge"))
    assert "is empty" in line
    empty.write_text("[]")
    line = _one_error_line(_invoke("eval", str(empty), "--no-judge"))
    assert "holds no replies" in line


def test_eval_unknown_and_missing_files(tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"hello": "world"}')
    assert "unknown results format" in _one_error_line(_invoke("eval", str(other), "--no-judge"))
    qfile = tmp_path / "q.json"
    qfile.write_text('[{"topic_id": "topic-1", "question": "Where?"}]')
    assert "question file, not interview results" in _one_error_line(
        _invoke("eval", str(qfile), "--no-judge")
    )
    assert "does not exist" in _one_error_line(
        _invoke("eval", str(tmp_path / "nope.json"), "--no-judge")
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 99, "kind": "interview", "items": []}))
    assert "format 99 is not supported" in _one_error_line(_invoke("eval", str(bad), "--no-judge"))


def test_eval_unreachable_judge_keeps_finished_judgements(tmp_path):
    results = tmp_path / "run.json"
    shutil.copy(FIXTURES / "beethoven_examples.json", results)
    report = tmp_path / "rep"
    report.mkdir()
    # judgements finished by an earlier run with another judge stay exactly as they were
    earlier = {
        "format": 1,
        "file": "run",
        "path": str(results.resolve()),
        "item_key": "0",
        "dimension": "values",
        "judge": "embedded",
        "score": 4,
        "status": "scored",
    }
    (report / "scores.jsonl").write_text(json.dumps(earlier) + "\n")
    result = _invoke(
        "eval", str(results), "--judge", UNREACHABLE, "--report", str(report), "--limit", "1"
    )
    line = _one_error_line(result)
    assert "cannot reach the OpenAI-compatible server at http://127.0.0.1:9/v1" in line
    assert "1 judgements are kept in" in line
    assert result.exit_code == 1
    assert read_jsonl(report / "scores.jsonl") == [earlier]


def test_eval_bad_judge_spec(tmp_path):
    line = _one_error_line(
        _invoke("eval", str(FIXTURES / "beethoven_examples.json"), "--judge", "gpt4")
    )
    assert "unknown model spec 'gpt4'" in line


def test_eval_checks_only_terminal_output():
    result = _invoke("eval", str(FIXTURES / "beethoven_examples.json"), "--no-judge")
    assert result.exit_code == 0, result.output
    # 1 of 9 replies breaks character, 2 of 3 topic-4 replies leak, 1 of 2 facts recalled
    rows = {
        ln.split("│")[1].strip(): ln.split("│")[2].strip()
        for ln in result.output.splitlines()
        if ln.count("│") == 3
    }
    assert rows["character breaks (lower is better)"].startswith("11% [0, ")
    assert rows["character breaks (lower is better)"].endswith("n=9")
    assert rows["topic-4 leakage (lower is better)"].startswith("67% [") and rows[
        "topic-4 leakage (lower is better)"
    ].endswith("n=3")
    assert rows["empty replies (lower is better)"].startswith("11% [")
    assert rows["runaway replies (lower is better)"].startswith("11% [")
    assert rows["fact recall (higher is better)"].startswith("50% [") and rows[
        "fact recall (higher is better)"
    ].endswith("n=2")

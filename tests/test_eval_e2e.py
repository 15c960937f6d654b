"""`charlite eval` end to end: two real interviews, the embedded judge, a side-by-side report.

The scores of a 135M judge mean nothing; the plumbing must be right: judgements saved as they
go, reused on a rerun, kept when the judge cannot be reached, and a report whose tables and
charts hold both runs.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from charlite.cli import cli
from charlite.eval.judge import SINGLE_DIMENSIONS
from charlite.files import read_jsonl

pytestmark = pytest.mark.slow
FAST = ["--max-tokens", "24"]
JUDGE = ["--judge", "embedded", "--limit", "1", "--max-tokens", "64", "--attempts", "2"]


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("eval-e2e")
    old = os.environ.get("CHARLITE_HOME")
    os.environ["CHARLITE_HOME"] = str(root / "home")
    try:
        run_a, run_b, report = root / "run_a.json", root / "run_b.json", root / "report"
        for args in (
            [
                "interview",
                "beethoven",
                "--limit",
                "2",
                "--no-facts",
                "--seed",
                "0",
                *FAST,
                "-o",
                str(run_a),
            ],
            ["interview", "beethoven", "--limit", "1", "--seed", "1", *FAST, "-o", str(run_b)],
            ["eval", str(run_a), str(run_b), *JUDGE, "--report", str(report)],
        ):
            result = _invoke(*args)
            assert result.exit_code == 0, result.output
        yield {"a": run_a, "b": run_b, "report": report, "output": result.output}
    finally:
        if old is None:
            os.environ.pop("CHARLITE_HOME", None)
        else:
            os.environ["CHARLITE_HOME"] = old


def test_results_and_judgements(evaluated):
    b = json.loads(evaluated["b"].read_text())
    assert [it["topic_id"] for it in b["items"]] == ["topic-1", "facts"], (
        "--limit 1 asks one question and one fact probe"
    )
    assert b["items"][1]["answer_keywords"] == ["Bonn"]
    scores = read_jsonl(evaluated["report"] / "scores.jsonl")
    assert len(scores) == 2 * len(SINGLE_DIMENSIONS), (
        "--limit 1: the first reply of each file, four dimensions"
    )
    assert {r["file"] for r in scores} == {"run_a", "run_b"}
    assert all(
        r["judge"] == "embedded" and r["item"] == 0 and r["topic_id"] == "topic-1" for r in scores
    )
    for r in scores:
        if r["status"] == "scored":
            assert isinstance(r["score"], int) and 1 <= r["score"] <= 7
        else:
            assert r["status"] == "unscored" and r["score"] is None and r["errors"]
        assert 1 <= r["attempts"] <= 2


def test_comparison_report_has_both_runs_side_by_side(evaluated):
    report = evaluated["report"]
    md = (report / "report.md").read_text()
    assert "| dimension | run_a | run_b |" in md
    assert "| check | run_a | run_b |" in md
    for dim in SINGLE_DIMENSIONS:
        row = next(ln for ln in md.splitlines() if ln.startswith(f"| {dim} |"))
        assert row.count("|") == 4  # dimension + two columns
    assert "![scores](scores.png)" in md and "![checks](checks.png)" in md
    summary = json.loads((report / "summary.json").read_text())
    assert [f["label"] for f in summary["files"]] == ["run_a", "run_b"]
    assert summary["checks"]["run_b"]["fact_recall"]["n"] == 1
    assert summary["checks"]["run_a"]["fact_recall"]["n"] == 0
    assert "run_a" in evaluated["output"] and "run_b" in evaluated["output"]


def test_charts_open(evaluated):
    import matplotlib.image as mpimg
    from PIL import Image

    for name in ("scores.png", "checks.png"):
        path = evaluated["report"] / name
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 200
        pixels = mpimg.imread(path)
        assert pixels.ndim == 3 and pixels.std() > 0  # not a blank image


def test_rerun_reuses_judgements_and_unreachable_judge_keeps_them(evaluated):
    report = evaluated["report"]
    before = (report / "scores.jsonl").read_text()
    again = _invoke(
        "eval", str(evaluated["a"]), str(evaluated["b"]), *JUDGE, "--report", str(report)
    )
    assert again.exit_code == 0, again.output
    assert "0 new judgements, 8 reused" in again.output
    assert (report / "scores.jsonl").read_text() == before

    gone = _invoke(
        "eval",
        str(evaluated["a"]),
        "--judge",
        "openai:x@http://127.0.0.1:9/v1",
        "--limit",
        "1",
        "--report",
        str(report),
    )
    assert gone.exit_code == 1
    errors = [ln for ln in gone.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "cannot reach" in errors[0] and "Traceback" not in gone.output
    assert (report / "scores.jsonl").read_text() == before

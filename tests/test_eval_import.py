"""Importing the paper's single-turn result files: format, character inference, checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlite import characters
from charlite.cli import cli
from charlite.errors import DataError
from charlite.eval.evaluate import check_records, prepare
from charlite.eval.results import infer_character, load_results

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
PAPER = FIXTURES / "Beethoven_paper_result.json"


def test_paper_file_loads():
    res = load_results(PAPER)
    assert res.source_format == "paper" and res.mode == "single" and res.character is None
    assert [i.topic_id for i in res.items] == ["topic-1", "topic-2", "topic-3", "topic-4"]
    second = res.items[1].exchanges[0]
    assert second.thinking == "That drunkard."
    assert second.speaking.startswith("He taught me")
    assert res.items[1].transcript() == [
        "Man: What do you think of your father?",
        "Beethoven (thinking): That drunkard.",
        "Beethoven (speaking): He taught me the keyboard with a heavy hand. I will say no more.",
    ]


def test_character_is_inferred_from_the_reply_roles_or_the_path(tmp_path):
    profiles = characters.all_profiles()
    assert infer_character(load_results(PAPER), profiles) == "beethoven"
    # no roles that name anyone: the paper's folder name tells (its typo included)
    data = json.loads(PAPER.read_text())
    for entry in data:
        for line in entry["reply"]:
            line["role"] = "Character"
    folder = tmp_path / "Hermonie_sft_result"
    folder.mkdir()
    (folder / "2023-00-00-00-00-00.json").write_text(json.dumps(data))
    named = load_results(folder / "2023-00-00-00-00-00.json")
    assert infer_character(named, profiles) == "hermione"
    assert named.model == "sft"  # the paper's folder names the model too
    (folder / "2023-00-00-00-00-00.json").rename(tmp_path / "anonymous.json")
    assert infer_character(load_results(tmp_path / "anonymous.json"), profiles) is None
    with pytest.raises(DataError) as info:
        prepare([tmp_path / "anonymous.json"])
    assert "--character NAME" in str(info.value)
    inp = prepare([tmp_path / "anonymous.json"], character="socrates")[0]
    assert inp.profile.slug == "socrates" and inp.results.character == "socrates"


def test_paper_file_checks_use_profile_facts():
    inp = prepare([PAPER])[0]
    recs = check_records([inp])
    assert [r["fact_recall"] for r in recs] == [
        True,
        None,
        None,
        None,
    ]  # "Where were you born?" is a fact
    assert recs[3]["topic4_leakage"] is False
    assert inp.setting["location"] == "Coffee Shop - Afternoon"


def test_a_charlite_file_for_another_character_is_refused():
    with pytest.raises(DataError) as info:
        prepare([FIXTURES / "beethoven_examples.json"], character="newton")
    assert "not 'newton'" in str(info.value)


def test_cli_judges_nothing_but_checks_a_paper_file(tmp_path):
    shutil.copy(PAPER, tmp_path / "paper.json")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["eval", str(tmp_path / "paper.json"), "--no-judge", "--report", str(tmp_path / "rep")]
    )
    assert result.exit_code == 0, result.output
    assert "fact recall" in result.output and "100% [100, 100] n=1" in result.output
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| paper | beethoven | paper | single | paper | 4 | 4 |" in report
    assert "Scores by dimension" not in report  # no judge, no scores
    assert (tmp_path / "rep" / "checks.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["judge"] is None and summary["files"][0]["source_format"] == "paper"

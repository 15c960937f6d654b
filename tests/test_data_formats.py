"""charlite data import / export / stats on fixture files written in each format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlite.cli import cli
from charlite.experience.dataset import Dataset
from charlite.experience.schemas import Experience, SceneRecord

FIXTURES = Path(__file__).parent / "fixtures" / "character_llm"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def turns(exp: Experience) -> list[tuple]:
    return [(t.role, t.action, t.content) for t in exp.dialogue]


def test_import_character_llm_experiences_reads_roles_actions_and_kind():
    res = run("data", "import", "beethoven", str(FIXTURES / "experiences.json"))
    assert res.exit_code == 0, res.output
    assert "imported 2 records into beethoven/default: 1 experiences, 1 protective" in res.output
    ds = Dataset("beethoven")
    [exp] = ds.experiences("experiences")
    assert turns(exp) == [
        ("Johann", None, "Up, Ludwig! The Elector's men will hear you play on Sunday."),
        ("Beethoven", "thinking", "My fingers are cold and he smells of wine again."),
        ("Beethoven", "speaking", "I am coming, Father. Which piece shall I play?"),
        ("Johann", None, "The sonata, from the beginning, and without mistakes."),
    ]
    assert exp.location.startswith("The Beethoven family's rooms")
    assert (
        exp.status == "Johann wakes Ludwig late at night to practise the keyboard before a concert."
    )
    [prot] = ds.experiences("protective")
    # the full name is the character too; its label becomes the profile's short name
    assert [t.role for t in prot.dialogue] == ["Haydn", "Beethoven", "Beethoven"]
    manifest = ds.read_manifest()
    assert manifest["format"] == 1
    [source] = manifest["sources"]
    assert source["file"] == str((FIXTURES / "experiences.json").resolve())
    assert source["records"] == {"experiences": 1, "protective": 1}
    assert manifest["counts"] == {"scenes": 0, "experiences": 1, "protective": 1}


def test_import_scenes():
    res = run("data", "import", "beethoven", str(FIXTURES / "scenes.json"), "--dataset", "s")
    assert res.exit_code == 0, res.output
    scenes = Dataset("beethoven", "s").scenes()
    assert [s.type for s in scenes] == ["chat", "lesson"]
    assert scenes[1].location == "Haydn's lodgings in Vienna, early 1793"
    assert all(s.source == "import:character-llm" for s in scenes)


def test_import_prompted_sharegpt_and_messages():
    for name in ("prompted.jsonl", "sharegpt.json", "messages.jsonl"):
        res = run("data", "import", "beethoven", str(FIXTURES / name))
        assert res.exit_code == 0, res.output
    ds = Dataset("beethoven")
    by_location = {e.location: e for e in ds.all_experiences()}
    tavern = by_location["A tavern near the Kärntnertor Theatre, Vienna, May 1824"]
    assert turns(tavern) == [
        ("Schindler", None, "Master, the audience rose five times!"),
        ("Beethoven", "thinking", "I saw their hats in the air but heard nothing."),
        ("Beethoven", "speaking", "Five times? And how much money did the box office take?"),
    ]
    assert tavern.status.startswith("Beethoven celebrates the first performance")
    spotify = by_location["Coffee Shop - Afternoon"]
    assert spotify.kind == "protective"
    cellar = by_location["Vienna, 1809"]  # ShareGPT with the system message as a turn
    assert turns(cellar)[0] == ("Kaspar", None, "Cover your ears with the pillows, brother.")
    assert turns(cellar)[-1] == ("Kaspar", None, "It will be over by morning.")
    heiligenstadt = by_location["Heiligenstadt, October 1802"]
    assert turns(heiligenstadt)[1:] == [
        ("Beethoven", "thinking", "I hear nothing. Nothing at all."),
        ("Beethoven", "speaking", "Let us walk on, Ries."),
    ]
    palace = by_location["Prince Lichnowsky's palace, Vienna, 1806"]
    assert turns(palace)[0] == ("Lichnowsky", None, "Play something for our guests, Ludwig.")
    # no system message: the profile's default scene; no speaker label: "Visitor"
    plain = [e for e in ds.all_experiences() if e.dialogue[0].role == "Visitor"]
    assert len(plain) == 1 and plain[0].location.startswith("Beethoven's untidy lodgings")
    assert ds.counts() == {"scenes": 0, "experiences": 5, "protective": 1}


def test_reimport_adds_no_duplicates():
    assert run("data", "import", "beethoven", str(FIXTURES / "messages.jsonl")).exit_code == 0
    res = run("data", "import", "beethoven", str(FIXTURES / "messages.jsonl"))
    assert res.exit_code == 0
    assert "imported 0 records" in res.output and "2 already there" in res.output
    assert Dataset("beethoven").counts()["experiences"] == 2


def test_bad_records_are_reported_with_line_numbers_and_skipped():
    res = run("data", "import", "beethoven", str(FIXTURES / "malformed.jsonl"))
    assert res.exit_code == 0
    assert "line 2: not valid JSON" in res.output
    assert (
        "line 3: not a scene, experience, ShareGPT, messages or Character-LLM record" in res.output
    )
    assert "line 4: Beethoven never speaks in the output" in res.output
    assert "line 5: 'Haydn' thinks, but only Beethoven may think" in res.output
    assert "imported 1 record into beethoven/default" in res.output
    assert "skipped 4 bad records" in res.output
    [exp] = Dataset("beethoven").experiences()
    assert exp.dialogue[0].role == "Neefe"


def test_bad_records_in_a_json_array_get_their_line(tmp_path):
    path = tmp_path / "mixed.json"
    good = json.loads((FIXTURES / "scenes.json").read_text())[0]
    path.write_text(json.dumps([good, {"nothing": 1}], indent=2))
    res = run("data", "import", "beethoven", str(path))
    assert res.exit_code == 0
    starts = [i + 1 for i, ln in enumerate(path.read_text().split("\n")) if ln == "  {"]
    line = starts[1]  # the second element's first line
    assert line > 2
    assert f"line {line}: not a scene" in res.output


def test_malformed_file_is_one_line_error_and_keeps_existing_data():
    assert run("data", "import", "beethoven", str(FIXTURES / "messages.jsonl")).exit_code == 0
    ds = Dataset("beethoven")
    before = {p.name: p.read_bytes() for p in ds.path.iterdir() if p.is_file()}
    res = CliRunner().invoke(cli, ["data", "import", "beethoven", str(FIXTURES / "broken.json")])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0
    assert res.output.startswith("error: ") and "broken.json: not valid JSON" in res.output
    assert "Traceback" not in res.output
    after = {p.name: p.read_bytes() for p in ds.path.iterdir() if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "name", ["missing.jsonl", "binary.bin", "empty.jsonl", "nothing-good.jsonl"]
)
def test_unreadable_import_files(tmp_path, name):
    path = tmp_path / name
    if name == "binary.bin":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif name == "empty.jsonl":
        path.write_text("\n\n")
    elif name == "nothing-good.jsonl":
        path.write_text('{"a": 1}\n[1, 2]\n')
    res = CliRunner().invoke(cli, ["data", "import", "beethoven", str(path)])
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and res.output.count("\n") == 1
    assert not Dataset("beethoven").path.exists()


def _seed_dataset() -> Dataset:
    for name in ("experiences.json", "prompted.jsonl", "sharegpt.json", "messages.jsonl"):
        assert run("data", "import", "beethoven", str(FIXTURES / name)).exit_code == 0
    return Dataset("beethoven")


def _key(exp: Experience):
    return (exp.kind, exp.location, exp.status, tuple(turns(exp)))


@pytest.mark.parametrize(
    "fmt,suffix",
    [
        ("messages", ".jsonl"),
        ("sharegpt", ".json"),
        ("sharegpt", ".jsonl"),
        ("character-llm", ".jsonl"),
    ],
)
def test_export_import_round_trip(tmp_path, fmt, suffix):
    ds = _seed_dataset()
    original = sorted(_key(e) for e in ds.all_experiences())
    out = tmp_path / f"out{suffix}"
    res = run("data", "export", "beethoven", "--format", fmt, "-o", str(out))
    assert res.exit_code == 0, res.output
    assert f"wrote {len(original)} {fmt} records" in res.output
    if suffix == ".json":
        assert isinstance(json.loads(out.read_text()), list)
    else:
        assert len(out.read_text().splitlines()) == len(original)
    res = run("data", "import", "beethoven", str(out), "--dataset", "back")
    assert res.exit_code == 0, res.output
    back = sorted(_key(e) for e in Dataset("beethoven", "back").all_experiences())
    assert back == original


def test_export_shapes(tmp_path):
    _seed_dataset()
    res = run("data", "export", "beethoven", "--format", "sharegpt", "--stage", "experiences")
    first = json.loads(res.output.splitlines()[0])
    assert first["system"].startswith("I want you to act like Ludwig van Beethoven.")
    assert "Location: The Beethoven family's rooms" in first["system"]
    assert [c["from"] for c in first["conversations"]] == ["human", "gpt", "human"]
    assert first["conversations"][1]["value"] == (
        "(thinking) My fingers are cold and he smells of wine again.\n"
        "(speaking) I am coming, Father. Which piece shall I play?"
    )
    res = run("data", "export", "beethoven", "--format", "messages", "--stage", "protective")
    lines = [json.loads(x) for x in res.output.splitlines()]
    assert len(lines) == 2 and all(x["kind"] == "protective" for x in lines)
    assert [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant"]
    res = run("data", "export", "beethoven", "--format", "character-llm")
    rec = json.loads(res.output.splitlines()[0])
    assert set(rec) == {"prompt", "output", "source"}
    assert rec["prompt"].endswith("The interactions are as follows:\n\n")
    assert rec["output"].split("\n")[1] == (
        "Beethoven (thinking): My fingers are cold and he smells of wine again.<|eot|>"
    )


def test_stats_figures():
    _seed_dataset()
    assert run("data", "import", "beethoven", str(FIXTURES / "scenes.json")).exit_code == 0
    res = run("data", "stats", "beethoven", "--json")
    s = json.loads(res.output)
    assert s["records"] == {"scenes": 2, "experiences": 6, "protective": 2}
    exps = Dataset("beethoven").all_experiences()
    n_turns = [len(e.dialogue) for e in exps]
    assert s["turns_per_experience"] == {
        "mean": round(sum(n_turns) / len(n_turns), 2),
        "min": min(n_turns),
        "max": max(n_turns),
    }
    mine = [t for e in exps for t in e.dialogue if t.role == "Beethoven"]
    thinking = sum(t.action == "thinking" for t in mine)
    assert s["character_turns"]["thinking"] == thinking
    assert s["character_turns"]["speaking"] == len(mine) - thinking
    assert s["words"]["total"] == sum(len(t.content.split()) for e in exps for t in e.dialogue)
    assert s["coverage"]["paragraphs"] == 16 and s["coverage"]["covered"] == 0
    assert len(s["sources"]) == 5
    text = run("data", "stats", "beethoven").output
    assert "records: 2 scenes, 6 experiences, 2 protective" in text
    assert f"Beethoven's turns: {thinking} thinking" in text


def test_stats_of_missing_dataset_is_one_line():
    res = CliRunner().invoke(cli, ["data", "stats", "beethoven", "--dataset", "nope"])
    assert res.exit_code == 1
    assert res.output == (
        "error: beethoven has no dataset 'nope'; run 'charlite generate beethoven' or "
        "'charlite data import beethoven FILE'\n"
    )


def test_records_validate_against_models():
    ds = _seed_dataset()
    assert run("data", "import", "beethoven", str(FIXTURES / "scenes.json")).exit_code == 0
    for stage in ("experiences", "protective"):
        for raw in ds.raw(stage):
            exp = Experience.model_validate(raw)
            assert exp.problems("Beethoven", min_turns=2) == []
    for raw in ds.raw("scenes"):
        SceneRecord.model_validate(raw)

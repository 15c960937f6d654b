"""charlite generate: validation of teacher output, ids, manifest, lock, bad input, and an
end-to-end run with the real embedded model as teacher."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from charlite.cli import cli
from charlite.experience import pipeline, prompts, records
from charlite.experience.dataset import Dataset
from charlite.experience.records import Rejected, Task
from charlite.experience.schemas import (
    Experience,
    SceneRecord,
    TeacherExperience,
    TeacherProtective,
    TeacherScene,
    teacher_schema_for,
)


@pytest.fixture
def beethoven():
    from charlite.characters import get_profile

    return get_profile("beethoven")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- ids, seeds, schemas ----------------------------------------------------------------------


def test_ids_are_deterministic_and_distinct():
    a = pipeline.scene_id("beethoven", 0, 0, 0)
    assert a == pipeline.scene_id("beethoven", 0, 0, 0)
    others = {
        pipeline.scene_id("beethoven", 1, 0, 0),
        pipeline.scene_id("beethoven", 0, 1, 0),
        pipeline.scene_id("beethoven", 0, 0, 1),
        pipeline.scene_id("mozart", 0, 0, 0),
    }
    assert a not in others and len(others) == 4
    assert pipeline.experience_id(a) != pipeline.experience_id(pipeline.scene_id("x", 0, 0, 0))
    assert pipeline.protective_id("beethoven", 0, 0) != pipeline.protective_id("beethoven", 1, 0)
    seeds = {pipeline.attempt_seed(0, a, n) for n in range(5)}
    assert len(seeds) == 5 and all(0 <= s < 2**31 for s in seeds)


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


@pytest.mark.parametrize("model", [TeacherScene, TeacherExperience, TeacherProtective])
@pytest.mark.parametrize("others", [None, ["Haydn"]])
def test_every_string_and_list_of_teacher_schemas_is_bounded(model, others):
    schema = teacher_schema_for(model, "Beethoven", others)
    assert "$ref" not in json.dumps(schema)
    kinds = set()
    for path, node in _walk(schema):
        if node.get("type") == "string" and "enum" not in node:
            assert 0 < node["maxLength"] <= 240, path
            kinds.add("string")
        if node.get("type") == "array":
            assert node["maxItems"] <= 6, path
            kinds.add("array")
        if node.get("type") == "object":
            assert node["additionalProperties"] is False, path
    assert "string" in kinds


def test_dialogue_schema_pins_speakers():
    loose = teacher_schema_for(TeacherExperience, "Beethoven", ["Haydn", "Ries"], shaped=False)
    mine, others = loose["properties"]["dialogue"]["items"]["anyOf"]
    assert mine["properties"]["role"]["enum"] == ["Beethoven"]
    assert mine["properties"]["action"]["enum"] == ["thinking", "speaking"]
    assert others["properties"]["role"]["enum"] == ["Haydn", "Ries"]
    assert others["properties"]["action"]["enum"] == ["speaking"]
    shaped = teacher_schema_for(TeacherExperience, "Beethoven", ["Haydn"])["properties"]["dialogue"]
    shapes = shaped["anyOf"]
    assert [len(a["prefixItems"]) for a in shapes] == [3, 4, 5, 6]
    opening = [
        (t["properties"]["role"]["enum"], t["properties"]["action"]["enum"])
        for t in shapes[0]["prefixItems"]
    ]
    assert opening == [
        (["Haydn"], ["speaking"]),
        (["Beethoven"], ["thinking"]),
        (["Beethoven"], ["speaking"]),
    ]
    anyone = shapes[3]["prefixItems"][5]["anyOf"]
    assert [t["properties"]["role"]["enum"] for t in anyone] == [["Beethoven"], ["Haydn"]]
    assert all(a["items"] is False and a["minItems"] == len(a["prefixItems"]) for a in shapes)


def test_schemas_compile_to_llama_cpp_grammars():
    from llama_cpp.llama_grammar import LlamaGrammar

    for model in (TeacherScene, TeacherExperience, TeacherProtective):
        schema = json.dumps(teacher_schema_for(model, "Beethoven", ["Haydn"]))
        grammar = LlamaGrammar.from_json_schema(schema, verbose=False)
        assert "root ::=" in grammar._grammar


def test_prompts_carry_profile_and_version(beethoven):
    assert prompts.PROMPT_VERSION
    scene = prompts.scene_messages(beethoven, 3, 1, 2)[1]["content"]
    assert beethoven.paragraphs[3].text in scene
    assert "scene 2 of 2" in scene
    prot = prompts.protective_messages(beethoven, 0)[1]["content"]
    assert "after 1827" in prot and "Stranger" in prot
    rec = SceneRecord(id="s", paragraph_id=3, location="Vienna", background="A quarrel.")
    exp = prompts.experience_messages(beethoven, rec, ["Ries"])[1]["content"]
    assert beethoven.speaking_style.strip() in exp and '"Ries"' in exp


def test_fictional_characters_meet_the_real_world():
    from charlite.characters import get_profile

    hermione = get_profile("hermione")
    assert prompts.is_fictional(hermione)
    assert (
        "outside Hermione's fictional world"
        in prompts.protective_messages(hermione, 0)[1]["content"]
    )


# -- what is kept and what is rejected ---------------------------------------------------------


def reply(data: dict, finish: str = "stop"):
    return json.dumps(data), finish


def test_parse_reply_reasons():
    with pytest.raises(Rejected) as exc:
        records.parse_teacher_json('{"type": "chat", "loc', "length", TeacherScene)
    assert exc.value.reason == "truncated"
    with pytest.raises(Rejected) as exc:
        records.parse_teacher_json('{"type": "chat",', "stop", TeacherScene)
    assert exc.value.reason == "invalid_json"
    with pytest.raises(Rejected) as exc:
        records.parse_teacher_json('{"type": "chat"}', "stop", TeacherScene)
    assert exc.value.reason == "schema"
    with pytest.raises(Rejected) as exc:
        records.parse_teacher_json("  ", "stop", TeacherScene)
    assert exc.value.reason == "empty_reply"
    # a raw newline inside a string and a lone surrogate escape are accepted and cleaned
    ok = records.parse_teacher_json(
        '{"type": "chat", "location": "Bonn\n1778", "background": "A lesson \\ud800 at night.",'
        ' "people": ["Neefe"]}',
        "stop",
        TeacherScene,
    )
    assert ok.background == "A lesson ? at night."


def _exp_task(scene=None):
    scene = scene or SceneRecord(
        id="s-1", paragraph_id=2, type="lesson", location="Vienna", background="A lesson."
    )
    return Task("experiences", "e-1", 0, 2, scene=scene)


def _turns(*spec):
    return [{"role": r, "action": a, "content": c} for r, a, c in spec]


def build(beethoven, turns, background="Haydn corrects the exercises."):
    model = TeacherExperience.model_validate({"background": background, "dialogue": turns})
    return records.build_experience(beethoven, model, _exp_task(), "embedded")


def test_experience_is_normalised(beethoven):
    exp = build(
        beethoven,
        _turns(
            ("Haydn", "speaking", "Your fugue has mistakes."),
            ("Ludwig van Beethoven", "thinking", "He never looks closely."),
            ("beethoven", "speaking", " I shall write another. "),
        ),
    )
    assert [(t.role, t.action) for t in exp.dialogue] == [
        ("Haydn", None),
        ("Beethoven", "thinking"),
        ("Beethoven", "speaking"),
    ]
    assert exp.dialogue[2].content == "I shall write another."
    assert (exp.scene_id, exp.paragraph_id, exp.scene_type) == ("s-1", 2, "lesson")
    assert exp.status == "Haydn corrects the exercises." and exp.location == "Vienna"
    assert exp.problems("Beethoven") == []


@pytest.mark.parametrize(
    "turns,reason",
    [
        (
            [
                ("Haydn", "thinking", "Hm."),
                ("Beethoven", "speaking", "Yes."),
                ("Haydn", "speaking", "No."),
            ],
            "others_thinking",
        ),
        (
            [
                ("Haydn", "speaking", "One."),
                ("Ries", "speaking", "Two."),
                ("Haydn", "speaking", "Three."),
            ],
            "character_absent",
        ),
        (
            [
                ("Haydn", "speaking", "One."),
                ("Beethoven", "thinking", "Two."),
                ("Haydn", "speaking", "Three."),
            ],
            "character_silent",
        ),
        (
            [
                ("Beethoven", "speaking", "One."),
                ("Beethoven", "thinking", "Two."),
                ("Beethoven", "speaking", "Three."),
            ],
            "no_other_speaker",
        ),
        (
            [
                ("Haydn", "speaking", "Same."),
                ("Beethoven", "speaking", "same."),
                ("Haydn", "speaking", "Same."),
            ],
            "repetitive",
        ),
        (
            [
                ("Haydn", "speaking", "Well?"),
                ("Beethoven", "speaking", "[]"),
                ("Haydn", "speaking", "Hm."),
            ],
            "no_words",
        ),
        (
            [
                ("Haydn", "speaking", "Well?"),
                ("Beethoven", "speaking", "   "),
                ("Haydn", "speaking", "Hm."),
            ],
            "empty_turn",
        ),
    ],
)
def test_experience_rejections(beethoven, turns, reason):
    with pytest.raises(Rejected) as exc:
        build(beethoven, _turns(*turns))
    assert exc.value.reason == reason


def test_too_few_turns_fail_the_schema():
    with pytest.raises(Rejected) as exc:
        records.parse_teacher_json(
            json.dumps(
                {
                    "background": "A short talk here.",
                    "dialogue": _turns(("Haydn", "speaking", "Hi.")),
                }
            ),
            "stop",
            TeacherExperience,
        )
    assert exc.value.reason == "schema" and "dialogue" in exc.value.detail


def test_scene_people_exclude_the_character(beethoven):
    model = TeacherScene(
        type="lesson",
        location="Vienna, 1793",
        background="Beethoven brings exercises to Haydn.",
        people=["Haydn", "Beethoven", " Haydn "],
    )
    scene = records.build_scene(beethoven, model, Task("scenes", "s-9", 0, 4), "embedded")
    assert scene.people == ["Haydn"]
    assert (scene.id, scene.paragraph_id, scene.teacher) == ("s-9", 4, "embedded")


def test_near_duplicate_scenes():
    a = "Vienna, 1793. Beethoven brings his counterpoint exercises to Haydn."
    assert records.similarity(a, a.lower()) == 1.0
    assert (
        records.similarity(a, "Vienna 1793: Beethoven brings counterpoint exercises to Haydn")
        >= 0.7
    )
    assert records.similarity(a, "Bonn, 1778. His father wakes him at night to practise.") < 0.2


def test_protective_record(beethoven):
    model = TeacherProtective.model_validate(
        {
            "topic": "the telephone",
            "location": "Vienna, 1820",
            "background": "A stranger asks about a machine.",
            "dialogue": _turns(
                ("Stranger", "speaking", "Do you own a telephone?"),
                ("Beethoven", "thinking", "What is this fool saying?"),
                ("Beethoven", "speaking", "Write it down, I cannot hear you."),
            ),
        }
    )
    exp = records.build_protective(beethoven, model, Task("protective", "p-1", 0), "embedded")
    assert (exp.kind, exp.topic, exp.id) == ("protective", "the telephone", "p-1")
    Experience.model_validate(exp.model_dump())


# -- bad input, lock, manifest ---------------------------------------------------------------


def test_profile_without_paragraphs(charlite_home):
    folder = charlite_home / "characters" / "empty"
    folder.mkdir(parents=True)
    (folder / "profile.md").write_text("---\nname: Nobody Atall\nslug: empty\n---\n\n")
    res = invoke("generate", "empty")
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and res.output.count("\n") == 1
    assert "no paragraphs" in res.output
    assert not (folder / "data").exists()


def test_unreachable_teacher_is_one_line_and_leaves_nothing(charlite_home):
    url = f"http://127.0.0.1:{free_port()}/v1"
    res = invoke("generate", "beethoven", "--teacher", f"openai:x@{url}", "--quiet")
    assert res.exit_code == 1
    assert res.output.count("\n") == 1
    assert res.output.startswith(f"error: cannot reach the OpenAI-compatible server at {url}")
    assert not Dataset("beethoven").path.exists()


def test_unreachable_teacher_keeps_existing_data(charlite_home):
    from tests.test_data_formats import FIXTURES

    assert invoke("data", "import", "beethoven", str(FIXTURES / "experiences.json")).exit_code == 0
    ds = Dataset("beethoven")
    before = {p.name: p.read_bytes() for p in ds.path.iterdir() if p.is_file()}
    url = f"http://127.0.0.1:{free_port()}/v1"
    res = invoke("generate", "beethoven", "--teacher", f"openai:x@{url}", "--quiet")
    assert res.exit_code == 1 and "cannot reach" in res.output
    after = {p.name: p.read_bytes() for p in ds.path.iterdir() if p.is_file()}
    assert after == before


def test_unwritable_dataset_folder(charlite_home):
    data = charlite_home / "characters" / "beethoven" / "data"
    data.parent.mkdir(parents=True)
    data.write_text("a file where the data folder should be")
    res = invoke("generate", "beethoven", "--quiet")
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert res.output.startswith("error: cannot create ")
    assert data.read_text() == "a file where the data folder should be"


def test_bad_teacher_spec_and_counts():
    res = invoke("generate", "beethoven", "--teacher", "nonsense")
    assert res.exit_code == 1 and "unknown model spec 'nonsense'" in res.output
    res = invoke("generate", "beethoven", "--paragraphs", "0")
    assert res.exit_code == 2 and "--paragraphs" in res.output
    assert not Dataset("beethoven").path.exists()


def test_second_run_on_a_dataset_is_refused(charlite_home):
    ds = Dataset("beethoven", "busy")
    with ds.lock("test"):
        res = invoke("generate", "beethoven", "--dataset", "busy", "--quiet")
        res2 = invoke(
            "data",
            "import",
            "beethoven",
            "tests/fixtures/character_llm/scenes.json",
            "--dataset",
            "busy",
        )
    assert res.exit_code == 1
    import os

    assert res.output == (
        f"error: dataset 'busy' of beethoven is being written by another charlite process "
        f"(pid {os.getpid()}); wait for it to finish, or use another --dataset\n"
    )
    assert res2.exit_code == 1 and "being written by another charlite process" in res2.output
    with ds.lock("test"):  # released again
        pass


def test_changed_seed_is_refused(charlite_home):
    ds = Dataset("beethoven")
    ds.create()
    manifest = ds.new_manifest()
    manifest.update(seed=7, prompt_version=prompts.PROMPT_VERSION)
    ds.write_manifest(manifest)
    res = invoke("generate", "beethoven", "--quiet")
    assert res.exit_code == 1
    assert "was generated with seed 7" in res.output and "use another --dataset" in res.output


# -- end to end with the embedded model ------------------------------------------------------


def check_dataset(ds: Dataset, character: str = "Beethoven") -> dict:
    """Every stored line is whole, unique and valid against its model."""
    counts = {}
    for stage in ("scenes", "experiences", "protective"):
        path = ds.file(stage)
        raw = path.read_bytes()
        assert raw == b"" or raw.endswith(b"\n"), f"torn line in {path.name}"
        lines = [json.loads(x) for x in raw.decode().splitlines()]
        ids = [r["id"] for r in lines]
        assert len(ids) == len(set(ids)), f"duplicate ids in {path.name}"
        for rec in lines:
            if stage == "scenes":
                scene = SceneRecord.model_validate(rec)
                assert scene.location.strip() and scene.background.strip()
            else:
                exp = Experience.model_validate(rec)
                assert exp.problems(character) == []
                assert exp.kind == ("protective" if stage == "protective" else "experience")
                assert any(t.role == character and t.action == "speaking" for t in exp.dialogue)
                assert all(t.action is None for t in exp.dialogue if t.role != character)
        counts[stage] = len(lines)
    return counts


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_generate_end_to_end_with_embedded_teacher():
    res = invoke(
        "generate",
        "beethoven",
        "--paragraphs",
        "2",
        "--scenes",
        "1",
        "--protective",
        "1",
        "--max-attempts",
        "6",
        "--threads",
        "1",
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    ds = Dataset("beethoven")
    counts = check_dataset(ds)
    manifest = ds.read_manifest()
    assert manifest["format"] == 1 and manifest["kind"] == "charlite.dataset"
    assert manifest["teacher"] == "embedded"
    assert manifest["prompt_version"] == prompts.PROMPT_VERSION
    assert manifest["seed"] == 0
    assert manifest["parameters"]["scenes"] == 1 and manifest["parameters"]["paragraphs"] == 2
    assert manifest["expected"] == {"scenes": 2, "experiences": 2, "protective": 1}
    assert manifest["counts"] == counts
    from charlite.characters import get_profile

    assert manifest["profile_hash"] == get_profile("beethoven").digest()
    failures = [json.loads(x) for x in ds.failures_path.read_text().splitlines()]
    assert manifest["failures"] == {
        r: sum(f["reason"] == r for f in failures) for r in {f["reason"] for f in failures}
    }
    # every stage wrote valid records (6 attempts per record make a total failure unlikely)
    assert counts["scenes"] >= 1 and counts["experiences"] >= 1 and counts["protective"] == 1
    scenes = ds.scenes()
    assert {s.paragraph_id for s in scenes} <= {0, 1}
    assert {e.scene_id for e in ds.experiences()} <= {s.id for s in scenes}
    if manifest["status"] == "complete":
        assert counts == manifest["expected"]
    assert f"{counts['scenes']}/2 scenes, {counts['experiences']}/2 experiences" in res.output
    # a rerun of the finished command does nothing new
    again = invoke(
        "generate",
        "beethoven",
        "--paragraphs",
        "2",
        "--scenes",
        "1",
        "--protective",
        "1",
        "--max-attempts",
        "1",
        "--threads",
        "1",
        "--quiet",
    )
    assert again.exit_code == 0
    if manifest["status"] == "complete":
        assert "(0 new in" in again.output
    assert check_dataset(ds)["protective"] == 1


def test_scene_people_must_look_like_names(beethoven):
    model = TeacherScene(
        type="chat",
        location="Bonn, 1778",
        background="A concert at the court of the Elector.",
        people=[
            "Ludwig van Beethoven was a",
            "#lh_bk2.jpg#jim@dodmz3",
            "in his life and how he made it",
        ],
    )
    scene = records.build_scene(beethoven, model, Task("scenes", "s-2", 0, 0), "embedded")
    assert scene.people == []
    # with nobody named, the experience is between the character and a "Visitor"
    task = Task("experiences", "e-2", 0, 0, scene=scene)
    gen = pipeline.Generator(beethoven, pipeline.GenerateOptions())
    _, schema, _ = gen._messages_schema(task)
    opening = schema["properties"]["dialogue"]["anyOf"][0]["prefixItems"][0]
    assert opening["properties"]["role"]["enum"] == ["Visitor"]


def test_progress_counts_done_failed_and_attempts():
    from charlite.cli.generate import RichGenerationReporter

    rep = RichGenerationReporter()
    rep.start(total=5, done=1)
    rep.stage("scenes", 2, 1)
    rep.advance("scenes", True, 1)
    rep.advance("experiences", False, 3)
    task = rep.progress.tasks[0]
    assert (task.completed, task.total, task.description) == (2, 5, "scenes")
    assert (task.fields["failed"], task.fields["attempts"]) == (1, 4)
    rep.finish()


def test_teacher_threads_leave_a_core_free():
    import os

    n = os.cpu_count() or 2
    assert pipeline.teacher_threads() == max(1, n - 1)

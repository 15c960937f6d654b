"""charlite generate NAME --teacher profile: a dataset made of the profile's own sentences."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from charlite import characters
from charlite.cli import cli
from charlite.experience import grounded
from charlite.experience.dataset import Dataset
from charlite.experience.records import check_experience
from charlite.knowledge import coverage
from charlite.train.dataset import load_training_data


def _bundled() -> list[str]:
    from pathlib import Path

    root = Path(__file__).parent.parent / "profiles"
    return sorted(p.stem for p in root.glob("*.md"))


def invoke(*args: str, **kw):
    return CliRunner().invoke(cli, list(args), **kw)


def test_generate_teacher_profile_writes_checked_records_covering_every_fact():
    r = invoke("generate", "beethoven", "--teacher", "profile")
    assert r.exit_code == 0, r.output
    profile = characters.get_profile("beethoven")
    ds = Dataset("beethoven", "default")
    exps, prot = ds.experiences("experiences"), ds.experiences("protective")
    assert len(ds.raw("experiences")) == len(exps) > 100  # every line a valid record
    assert len(prot) == grounded.DEFAULT_PROTECTIVE
    for record in exps + prot:
        assert record.teacher == "profile" and record.source == "profile"
        check_experience(profile, record)  # the checks teacher-made records pass
    cov = coverage(profile, exps)
    assert cov["facts_covered"] == cov["facts"] == len(profile.facts)
    assert cov["paragraphs_covered"] == cov["paragraphs"]
    manifest = ds.read_manifest()
    assert manifest["teacher"] == "profile" and manifest["status"] == "complete"
    assert manifest["counts"]["experiences"] == len(exps)
    assert manifest["profile_hash"] == profile.digest()

    # every answer is the profile's own words, told in the first person
    text = " ".join(profile.paragraph_texts())
    who = profile.short_name
    for record in exps:
        [answer] = [t.content for t in record.dialogue if t.action == "speaking"]
        assert all(t.role == who for t in record.dialogue[1:])
        assert "Neefe" not in answer or "Neefe" in text
        assert not answer.startswith(("He ", "Beethoven ")), answer
    neefe = [r for r in exps if r.dialogue[0].content.startswith("Which teacher in Bonn")]
    # a fact is answered at once: the sentence that names it is the first thing said
    assert neefe and neefe[0].dialogue[1].action == "speaking"
    assert "Christian Gottlob Neefe" in neefe[0].dialogue[1].content

    # training reads it as it is
    data = load_training_data(profile, "default")
    assert data.counts["experience"] == len(exps) and not data.skipped


def test_rerunning_adds_nothing():
    assert invoke("generate", "beethoven", "--teacher", "profile").exit_code == 0
    ds = Dataset("beethoven", "default")
    before = {s: ds.file(s).read_bytes() for s in ("experiences", "protective")}
    r = invoke("generate", "beethoven", "--teacher", "profile")
    assert r.exit_code == 0, r.output
    assert "(0 new" in r.output
    assert {s: ds.file(s).read_bytes() for s in ("experiences", "protective")} == before
    # asking for more protective exchanges adds only those
    more = str(grounded.DEFAULT_PROTECTIVE + 2)
    r = invoke("generate", "beethoven", "--teacher", "profile", "--protective", more)
    assert r.exit_code == 0 and "(2 new" in r.output
    assert ds.file("experiences").read_bytes() == before["experiences"]


def test_data_stats_reports_paragraph_and_fact_coverage():
    invoke("generate", "socrates", "--teacher", "profile", "--paragraphs", "2")
    r = invoke("data", "stats", "socrates", "--json")
    assert r.exit_code == 0, r.output
    cov = json.loads(r.output)["coverage"]
    profile = characters.get_profile("socrates")
    assert cov["facts_covered"] == cov["facts"] == len(profile.facts)
    assert 2 <= cov["covered"] < cov["paragraphs"]  # fact answers also touch other paragraphs
    r = invoke("data", "stats", "socrates")
    assert f"{cov['facts_covered']} of {cov['facts']} fact probes" in r.output


def test_a_dataset_of_another_teacher_is_left_alone():
    ds = Dataset("beethoven", "default")
    ds.create()
    manifest = ds.new_manifest(characters.get_profile("beethoven").digest())
    manifest["teacher"] = "embedded"
    ds.write_manifest(manifest)
    r = invoke("generate", "beethoven", "--teacher", "profile")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: dataset 'default' of beethoven was made by another teacher")
    assert not ds.file("experiences").exists()


@pytest.mark.parametrize("slug", _bundled())
def test_every_bundled_profile_gives_grounded_records(slug):
    profile = characters.get_profile(slug)
    exps, prot, notes = grounded.build_records(profile, protective=4)
    assert notes == []
    cov = coverage(profile, exps)
    assert cov["complete"], [f for f in cov["per_fact"] if not f["covered"]]
    assert len({r.id for r in exps + prot}) == len(exps + prot)
    again = grounded.build_records(profile, protective=4)
    assert [r.model_dump() for r in again[0]] == [r.model_dump() for r in exps]
    for record in prot:
        assert record.kind == "protective" and record.topic


@pytest.mark.parametrize("slug", ["beethoven", "newton", "socrates"])
def test_protective_records_deflect_and_hold_out_the_topic4_bank(slug):
    from charlite.eval.checks import leakage
    from charlite.eval.question_bank import questions_for

    profile = characters.get_profile(slug)
    _, prot, _ = grounded.build_records(profile, protective=grounded.DEFAULT_PROTECTIVE)
    assert len(prot) == grounded.DEFAULT_PROTECTIVE
    bank = {q.question.lower() for q in questions_for(slug)[0]}
    for record in prot:
        question, _, reply = (t.content for t in record.dialogue)
        assert question.lower() not in bank  # the benchmark's topic-4 questions stay held out
        assert not leakage(question, reply, profile.knowledge_cutoff).flagged, reply


# -- the coverage stage of a real teacher ----------------------------------------------------------


def test_coverage_tasks_fill_what_the_dataset_lacks():
    from charlite.experience.pipeline import GenerateOptions, Generator, coverage_id

    profile = characters.get_profile("beethoven")
    gen = Generator(profile, GenerateOptions(coverage=2))
    tasks = gen.coverage_tasks()
    assert len(tasks) == 2 * len(profile.facts)
    assert {t.fact for t in tasks} == set(range(len(profile.facts)))
    assert tasks[0].id == coverage_id("beethoven", profile.facts[0].question, 0, 0)
    msgs, schema, _ = gen._messages_schema(tasks[0])
    assert profile.facts[0].question in msgs[-1]["content"]
    assert "Bonn" in msgs[-1]["content"]  # the profile sentence that answers it
    assert Generator(profile, GenerateOptions()).coverage_tasks() == []

    # grounded records already answer every probe three times: nothing left to ask
    assert invoke("generate", "beethoven", "--teacher", "profile").exit_code == 0
    assert Generator(profile, GenerateOptions(coverage=3)).coverage_tasks() == []
    have = [f["records"] for f in coverage(profile, Dataset("beethoven").experiences())["per_fact"]]
    tasks = Generator(profile, GenerateOptions(coverage=10)).coverage_tasks()
    assert len(tasks) == sum(max(0, 10 - n) for n in have) > 0


def test_a_coverage_experience_must_name_the_fact():
    from charlite.experience.pipeline import GenerateOptions, Generator
    from charlite.experience.records import Rejected, build_coverage
    from charlite.experience.schemas import TeacherExperience

    profile = characters.get_profile("beethoven")
    task = Generator(profile, GenerateOptions(coverage=1)).coverage_tasks()[3]  # Neefe
    other = "Traveller"

    def reply(answer: str) -> TeacherExperience:
        return TeacherExperience.model_validate(
            {
                "background": "A traveller from Bonn visits the old composer.",
                "dialogue": [
                    {"role": other, "action": "speaking", "content": "Who taught you in Bonn?"},
                    {"role": "Beethoven", "action": "thinking", "content": "Old memories."},
                    {"role": "Beethoven", "action": "speaking", "content": answer},
                ],
            }
        )

    exp = build_coverage(profile, reply("Neefe, the court organist."), task, "embedded")
    assert exp.id == task.id and exp.scene_type == "coverage" and exp.paragraph_id == 1
    with pytest.raises(Rejected) as err:
        build_coverage(profile, reply("A kind old man, I forget his name."), task, "embedded")
    assert err.value.reason == "fact_not_named"

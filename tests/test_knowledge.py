"""Knowledge in every mode: BM25 recall over a profile, recalled text in the turn (never the
system message), --knowledge auto|always|off, and training rendered the way chat renders."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from charlite import characters, knowledge, roleplay
from charlite.backends import GenParams
from charlite.backends.llamacpp import LlamaCppBackend
from charlite.chat import ChatSession
from charlite.cli import cli
from charlite.errors import CharliteError
from charlite.experience.schemas import Experience
from charlite.files import write_json_atomic
from charlite.home import CharacterPaths
from charlite.spec import parse_spec
from charlite.train.examples import experience_messages, with_knowledge
from charlite.voices import ResolvedModel

PARAMS = GenParams(temperature=0.0, max_tokens=12, seed=1, repeat_penalty=1.15)


@pytest.fixture
def beethoven():
    return characters.get_profile("beethoven")


# -- recall --------------------------------------------------------------------------------------


def test_who_taught_you_in_bonn_ranks_the_neefe_paragraph_first(beethoven):
    hits = knowledge.index_for(beethoven).search("Who taught you in Bonn?", k=3)
    assert "Neefe" in hits[0].text
    assert hits[0].score > hits[1].score > 0
    recalled = knowledge.recall(beethoven, "Who taught you in Bonn?")
    # the best paragraph comes last, right before the question, as its best-matching sentences
    assert "The decisive influence was Christian Gottlob Neefe" in recalled[-1]
    assert "Neefe" not in recalled[0]
    assert len(recalled) <= knowledge.RECALL_K
    assert all(len(knowledge.sentences(t)) <= knowledge.RECALL_SENTENCES for t in recalled)
    assert sum(len(t) for t in recalled) <= knowledge.RECALL_BUDGET_CHARS
    profile_text = " ".join(beethoven.paragraph_texts())
    assert all(s in profile_text for t in recalled for s in knowledge.sentences(t))


@pytest.mark.parametrize(
    ("slug", "question", "expected"),
    [
        ("beethoven", "What is the name of your only opera?", "Fidelio"),
        (
            "beethoven",
            "In which village did you write the letter to your brothers?",
            "Heiligenstadt",
        ),
        ("newton", "Where were you born?", "Woolsthorpe"),
    ],
)
def test_recall_finds_the_paragraph_of_a_fact(slug, question, expected):
    profile = characters.get_profile(slug)
    assert any(expected in text for text in knowledge.recall(profile, question))


def test_recall_skips_what_the_system_message_holds_and_unrelated_questions(beethoven):
    [best] = knowledge.index_for(beethoven).search("Who taught you in Bonn?", k=1)
    assert "Neefe" in knowledge.recall(beethoven, "Who taught you in Bonn?", k=1)[0]
    again = knowledge.recall(beethoven, "Who taught you in Bonn?", exclude=[best.text], k=1)
    assert again and "Neefe" not in again[0]
    assert knowledge.recall(beethoven, "zzyzx qwv") == []
    assert knowledge.recall(beethoven, "") == []


def test_the_index_is_built_once_per_profile(beethoven):
    assert knowledge.index_for(beethoven) is knowledge.index_for(beethoven)
    changed = beethoven.model_copy(update={"paragraphs": beethoven.paragraphs[:3]})
    assert knowledge.index_for(changed) is not knowledge.index_for(beethoven)
    assert len(knowledge.index_for(changed).texts) == 3


def test_with_recall_puts_the_paragraphs_before_the_question():
    assert roleplay.with_recall("Who taught you?", []) == "Who taught you?"
    text = roleplay.with_recall("Man: Who taught you?", ["Neefe  taught\nhim.", "Bonn."])
    assert text == f"[{roleplay.RECALL_HEADER} Neefe taught him. Bonn.]\nMan: Who taught you?"


# -- modes ---------------------------------------------------------------------------------------


def test_default_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(knowledge.KNOWLEDGE_ENV, raising=False)
    assert knowledge.default_knowledge_mode() == "auto"
    monkeypatch.setenv(knowledge.KNOWLEDGE_ENV, "Off")
    assert knowledge.default_knowledge_mode() == "off"
    monkeypatch.setenv(knowledge.KNOWLEDGE_ENV, "sometimes")
    with pytest.raises(CharliteError, match="CHARLITE_KNOWLEDGE must be one of auto, always, off"):
        knowledge.default_knowledge_mode()


def test_bad_knowledge_values_are_one_line_errors():
    r = CliRunner().invoke(cli, ["chat", "beethoven", "-m", "hi", "--knowledge", "maybe"])
    assert r.exit_code == 2 and "maybe" in r.output
    r = CliRunner().invoke(
        cli, ["chat", "beethoven", "-m", "hi"], env={knowledge.KNOWLEDGE_ENV: "maybe"}
    )
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: CHARLITE_KNOWLEDGE must be one of auto, always, off")
    assert "Traceback" not in r.output


def _export(slug: str, run_id: str, run_manifest: dict | None) -> ResolvedModel:
    """An export folder and its run's manifest, as export and train write them."""
    paths = CharacterPaths.of(slug)
    folder = paths.export(run_id)
    folder.mkdir(parents=True)
    write_json_atomic(folder / "manifest.json", {"kind": "charlite-export", "run_id": run_id})
    (folder / f"{slug}-lora.gguf").write_bytes(b"")
    if run_manifest is not None:
        paths.run(run_id).mkdir(parents=True)
        write_json_atomic(paths.run(run_id) / "manifest.json", run_manifest)
    spec = parse_spec("embedded")
    return ResolvedModel(spec, False, "trained", lora=folder / f"{slug}-lora.gguf")


def test_auto_recalls_unless_the_training_data_covered_the_profile(beethoven):
    prompted = ResolvedModel(parse_spec("embedded"), True, "embedded (prompted)")
    assert knowledge.use_knowledge("auto", beethoven, prompted)
    assert not knowledge.use_knowledge("off", beethoven, prompted)

    unknown = _export("beethoven", "r0", None)  # no run manifest: nothing shows coverage
    assert knowledge.use_knowledge("auto", beethoven, unknown)
    partial = _export(
        "beethoven", "r1", {"knowledge": {"share": 0, "coverage": {"complete": False}}}
    )
    assert knowledge.use_knowledge("auto", beethoven, partial)
    covered = _export(
        "beethoven", "r2", {"knowledge": {"share": 0, "coverage": {"complete": True}}}
    )
    assert not knowledge.use_knowledge("auto", beethoven, covered)
    assert knowledge.use_knowledge("always", beethoven, covered)
    reader = _export(
        "beethoven", "r3", {"knowledge": {"share": 0.5, "coverage": {"complete": True}}}
    )
    assert knowledge.use_knowledge("auto", beethoven, reader)  # trained to read recalled text
    other = ResolvedModel(parse_spec("gguf:/elsewhere/model.gguf"), False, "x", lora=None)
    assert knowledge.use_knowledge("auto", beethoven, other)


# -- training renders what chat renders ------------------------------------------------------------


def _record() -> Experience:
    return Experience.model_validate(
        {
            "id": "t-1",
            "location": "Vienna",
            "status": "A visitor asks.",
            "dialogue": [
                {"role": "Man", "content": "Who taught you in Bonn?"},
                {"role": "Beethoven", "action": "speaking", "content": "Neefe did."},
            ],
        }
    )


def test_training_messages_with_and_without_knowledge(beethoven):
    record = _record()
    plain = experience_messages(beethoven, record)
    assert plain == roleplay.to_messages(
        "Beethoven", beethoven.name, record.scene(), record.turns()
    )  # knowledge off: the rendering training always used
    recalled = experience_messages(beethoven, record, knowledge=True)
    assert recalled[0] == plain[0]  # the same system message
    assert recalled[1]["content"] == roleplay.with_recall(
        "Man: Who taught you in Bonn?", knowledge.recall(beethoven, "Who taught you in Bonn?")
    )
    assert "Neefe" in recalled[1]["content"].split("\n")[0]
    assert recalled[2] == plain[2]


def test_the_share_of_records_with_knowledge_is_fixed_per_id():
    ids = [f"r-{i}" for i in range(400)]
    chosen = [i for i in ids if with_knowledge(i, 0.5)]
    assert 150 < len(chosen) < 250
    assert chosen == [i for i in ids if with_knowledge(i, 0.5)]
    assert not any(with_knowledge(i, 0) for i in ids) and all(with_knowledge(i, 1) for i in ids)


def test_coverage_counts_paragraphs_and_fact_probes(beethoven):
    record = _record().model_copy(update={"paragraph_id": 1})
    cov = knowledge.coverage(beethoven, [record])
    assert cov["paragraphs_covered"] == 1 and cov["paragraphs"] == len(beethoven.paragraphs)
    neefe = [f for f in cov["per_fact"] if "Bonn first guided" in f["question"]]
    assert neefe[0]["covered"] and neefe[0]["records"] == 1
    assert cov["facts_covered"] == 1 and not cov["complete"]


# -- chat, on the real model ---------------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch):
    calls: list[list[dict]] = []
    original = LlamaCppBackend.stream

    def stream(self, messages, params=None):
        calls.append([dict(m) for m in messages])
        yield from original(self, messages, params)

    monkeypatch.setattr(LlamaCppBackend, "stream", stream)
    return calls


@pytest.fixture(scope="module")
def backend():
    from charlite.backends import get_backend

    return get_backend("embedded")


@pytest.mark.slow
@pytest.mark.parametrize("prompted", [True, False])
def test_the_system_message_stays_byte_identical_across_turns(backend, sent, beethoven, prompted):
    session = ChatSession(beethoven, backend, prompted=prompted, params=PARAMS, knowledge=True)
    system = session.system
    session.reply("Who taught you in Bonn?")
    session.reply("What is the name of your only opera?")
    first, second = sent
    assert first[0] == second[0] == {"role": "system", "content": system}
    assert roleplay.RECALL_HEADER not in system
    assert (roleplay.KNOWLEDGE_HEADER in system) == prompted
    # only the newest turn carries what was recalled; the earlier one renders as it was sent
    assert first[1]["content"].startswith(f"[{roleplay.RECALL_HEADER} ")
    assert "Neefe" in first[1]["content"] and first[1]["content"].endswith(
        "\nWho taught you in Bonn?"
    )
    assert second[1] == {"role": "user", "content": "Who taught you in Bonn?"}
    assert second[2]["role"] == "assistant"
    assert "Fidelio" in second[3]["content"]
    assert session.last_recall and "Fidelio" in session.last_recall[-1]  # the best: last
    if prompted:  # nothing recalled twice: paragraphs of the system message are left out
        assert not any(p in system for p in session.last_recall)


@pytest.mark.slow
def test_knowledge_off_reproduces_the_prompts_of_before(backend, sent, beethoven):
    session = ChatSession(beethoven, backend, params=PARAMS)  # knowledge off, as before
    assert session.system == roleplay.profile_system_message(beethoven, prompted=True)
    reply = session.reply("Who taught you in Bonn?")
    session.reply("What is the name of your only opera?")
    assert sent[0] == [
        {"role": "system", "content": session.system},
        {"role": "user", "content": "Who taught you in Bonn?"},
    ]
    assert sent[1][1:] == [
        {"role": "user", "content": "Who taught you in Bonn?"},
        {"role": "assistant", "content": sent[1][2]["content"]},
        {"role": "user", "content": "What is the name of your only opera?"},
    ]
    assert sent[1][2]["content"].strip() == reply

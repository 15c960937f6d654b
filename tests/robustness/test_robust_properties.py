"""Properties that hold for any input (hypothesis).

* role-play render -> parse is the identity for any text (tests/test_roleplay.py checks it on
  marker-like fragments; here the contents are arbitrary Unicode);
* the profile and card parsers raise nothing but charlite's own errors, on arbitrary bytes,
  arbitrary text and arbitrary (well-formed) front matter or card JSON; what they accept
  survives a write and a re-read;
* a JSONL store cut at any byte gives back a prefix of its records, is repaired, and takes the
  next append.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from charlite import cards
from charlite.characters import load_profile
from charlite.errors import CharliteError
from charlite.files import JsonlWriter, read_jsonl, repair_jsonl
from charlite.profile import dump_markdown, parse_markdown, parse_wiki_txt
from charlite.roleplay import Turn, parse_reply, render_reply

OPTS = {"deadline": None, "suppress_health_check": list(HealthCheck)}

# -------------------------------------------------------------------------------------------
# Role-play format


@settings(max_examples=400, **OPTS)
@given(
    st.lists(
        st.tuples(st.sampled_from(["thinking", "speaking"]), st.text(min_size=1).filter(str.strip)),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([None, "Beethoven", "Man", "(speaking)"]),
)
@example([("speaking", "  leading and trailing  \n")], None)
@example(
    [("thinking", "\\(speaking) x\n\\\\\n(thinking) y\r\nBeethoven (speaking): z")], "Beethoven"
)
def test_render_parse_identity_for_any_text(parts, name):
    """Every part whose content is not blank comes back exactly (blank parts are dropped)."""
    turns = [Turn("Beethoven", content, action) for action, content in parts]
    got = [(p.action, p.content) for p in parse_reply(render_reply(turns), name)]
    assert got == parts


# -------------------------------------------------------------------------------------------
# Profile and card parsers

PATH = Path("fuzz.md")
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
PROFILE_KEYS = st.sampled_from(
    ["name", "slug", "short_name", "era", "knowledge_cutoff", "home", "scene", "speaking_style",
     "traits", "facts", "license", "example_dialogue", "metadata", "paragraphs", "other"]
)  # fmt: skip
FRONT_MATTER = st.dictionaries(PROFILE_KEYS, JSON_VALUES, max_size=7)


def _only_charlite_errors(call):
    try:
        return call()
    except CharliteError:
        return None


@settings(max_examples=300, **OPTS)
@given(st.text(max_size=400))
def test_markdown_and_wiki_parsers_on_any_text(text):
    for parse in (parse_markdown, parse_wiki_txt):
        _only_charlite_errors(lambda parse=parse: parse(text, PATH))
        _only_charlite_errors(lambda parse=parse: parse("---\n" + text, PATH))
        _only_charlite_errors(lambda parse=parse: parse("---\n" + text + "\n---\n\nBody.", PATH))


@settings(max_examples=200, **OPTS)
@given(FRONT_MATTER, st.text(max_size=200))
def test_any_front_matter_is_a_profile_or_one_error(meta, body):
    text = "---\n" + yaml.safe_dump(meta, allow_unicode=True) + "---\n\n" + body
    profile = _only_charlite_errors(lambda: parse_markdown(text, PATH))
    if profile is None:
        return
    again = parse_markdown(dump_markdown(profile), PATH)  # what is accepted is kept as it is
    assert again.model_dump() == profile.model_dump()


@settings(max_examples=200, **OPTS)
@given(st.binary(max_size=600), st.sampled_from([".md", ".txt", ".json", ".png", ""]))
def test_any_bytes_in_any_profile_file(tmp_path_factory, data, suffix):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    _only_charlite_errors(lambda: load_profile(path))
    if suffix in (".json", ".png"):
        _only_charlite_errors(lambda: cards.read_card(path))


@settings(max_examples=150, **OPTS)
@given(st.binary(max_size=300), st.sampled_from([b"tEXt", b"zTXt", b"iTXt"]))
def test_any_png_chunk_payload(tmp_path_factory, payload, kind):
    """A well-formed PNG whose card chunk carries anything."""
    path = tmp_path_factory.mktemp("png") / "card.png"
    image = cards.portrait_png("fuzz", 8, 8)
    end = image.rindex(b"IEND") - 4
    path.write_bytes(image[:end] + cards.png_chunk(kind, b"chara\0" + payload) + image[end:])
    _only_charlite_errors(lambda: load_profile(path))


CARD_FIELDS = st.sampled_from(
    ["name", "description", "personality", "scenario", "first_mes", "mes_example",
     "creator_notes", "system_prompt", "tags", "alternate_greetings", "character_book",
     "extensions", "nickname", "group_only_greetings", "assets", "other"]
)  # fmt: skip


@settings(max_examples=150, **OPTS)
@given(
    st.dictionaries(CARD_FIELDS, JSON_VALUES, max_size=8),
    st.sampled_from([("chara_card_v2", "2.0"), ("chara_card_v3", "3.0"), (None, None)]),
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
)
def test_any_card_json_is_a_profile_or_one_error(tmp_path_factory, data, spec, top):
    card = {**top, "data": data}
    if spec[0]:
        card.update(spec=spec[0], spec_version=spec[1])
    else:
        card = {**top, **data}  # a V1 card: the fields at the top
    path = tmp_path_factory.mktemp("card") / "card.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    profile = _only_charlite_errors(lambda: load_profile(path))
    if profile is None:
        return
    again = parse_markdown(dump_markdown(profile), PATH)  # an imported card is a profile.md
    assert again.model_dump() == profile.model_dump()
    _only_charlite_errors(lambda: cards.card_from_profile(profile))


# -------------------------------------------------------------------------------------------
# JSONL store recovery

RECORDS = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "text", "n", "nested"]),
        st.one_of(st.text(max_size=20), st.integers(), st.lists(st.text(max_size=5), max_size=3)),
        min_size=1,
    ),
    min_size=1,
    max_size=5,
)


def _cut_everywhere(folder: Path, records: list[dict]) -> int:
    whole = folder / "whole.jsonl"
    whole.unlink(missing_ok=True)
    with JsonlWriter(whole) as writer:
        writer.write_many(records)
    data = whole.read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == 0x0A]  # byte after each newline
    cut = folder / "cut.jsonl"
    for offset in range(len(data) + 1):
        cut.write_bytes(data[:offset])
        got = read_jsonl(cut)
        complete = sum(1 for e in ends if e <= offset)
        # a record cut just before its newline is whole: it is kept
        assert got in (records[:complete], records[: complete + 1]), offset
        assert got == records[: len(got)]
        repair_jsonl(cut)
        repaired = cut.read_bytes()
        assert repaired == b"" or repaired.endswith(b"\n")
        assert read_jsonl(cut) == got  # the repair drops only what could not be read
        with JsonlWriter(cut) as writer:
            writer.write({"id": "next"})
        after = read_jsonl(cut)
        assert after == got + [{"id": "next"}], offset
        assert cut.read_bytes().endswith(b"\n")
    return len(data) + 1


def test_jsonl_cut_at_every_byte(tmp_path):
    records = [
        {"id": "a", "text": "plain"},
        {"id": "b", "text": "multi-byte: é ü 漢字 🎻", "n": 3},
        {"id": "c", "text": 'braces } ] " and \\n inside', "nested": {"x": [1, {"y": None}]}},
        {"id": "d", "text": ""},
    ]
    assert _cut_everywhere(tmp_path, records) > 200


@settings(max_examples=20, **OPTS)
@given(RECORDS)
def test_jsonl_cut_anywhere_any_records(tmp_path_factory, records):
    assume(all(isinstance(r, dict) for r in records))
    _cut_everywhere(tmp_path_factory.mktemp("jsonl"), records)

"""THE role-play format: system message, turns <-> chat messages, reply parsing, Character-LLM."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlite import characters, roleplay
from charlite.profile import Scene
from charlite.roleplay import (
    Turn,
    character_llm_output,
    character_llm_prompt,
    from_messages,
    parse_character_llm_output,
    parse_character_llm_prompt,
    parse_reply,
    render_reply,
    to_messages,
)

SCENE = Scene(location="Vienna, 1820", status="Beethoven is at his piano.")
META = (
    "I want you to act like Ludwig van Beethoven. I want you to respond and answer like "
    "Ludwig van Beethoven, using the tone, manner and vocabulary Ludwig van Beethoven would "
    "use. You must know all of the knowledge of Ludwig van Beethoven."
)


def _parts(text, name=None):
    return [(p.action, p.content) for p in parse_reply(text, name)]


# ---------------------------------------------------------------------------------------------
# The system message


def test_system_message_carries_the_meta_prompt_and_scene():
    system = roleplay.system_message("Ludwig van Beethoven", SCENE)
    assert system == (
        f"{META}\n\nThe status of you is as follows:\nLocation: Vienna, 1820\n"
        "Status: Beethoven is at his piano.\n\nThe interactions are as follows:"
    )


def test_prompted_system_message_has_style_and_relevant_paragraphs():
    p = characters.get_profile("beethoven")
    plain = roleplay.profile_system_message(p)
    assert plain.startswith(META)
    assert f"Location: {p.scene.location}\nStatus: {p.scene.status}" in plain
    assert roleplay.KNOWLEDGE_HEADER not in plain and "manner of speech" not in plain

    prompted = roleplay.profile_system_message(p, prompted=True, query="the Heiligenstadt letter")
    assert prompted.startswith(META)
    assert f"Your manner of speech: {p.speaking_style}" in prompted
    knowledge = prompted.split(roleplay.KNOWLEDGE_HEADER + "\n", 1)[1].split("\n\n")[0]
    lines = knowledge.split("\n")
    assert lines[0] == p.paragraphs[0].text  # who the character is, always first
    assert any("Heiligenstadt" in ln for ln in lines)  # the paragraph the question is about
    assert 1 < len(lines) < len(p.paragraphs)
    assert len(knowledge) <= 1800 + len(lines)
    assert prompted.endswith(roleplay.INTERACTIONS_HEADER)
    # the order of sections: meta, style, knowledge, status, interactions
    order = [
        prompted.index(x)
        for x in ("I want you", "Your manner", roleplay.KNOWLEDGE_HEADER, "Location:", "The inter")
    ]
    assert order == sorted(order)


def test_relevant_paragraphs_are_deterministic_and_in_profile_order():
    p = characters.get_profile("newton")
    a = roleplay.relevant_paragraphs(p, "gravity and the apple at Woolsthorpe", 2000)
    b = roleplay.relevant_paragraphs(p, "gravity and the apple at Woolsthorpe", 2000)
    assert a == b
    texts = p.paragraph_texts()
    assert [texts.index(t) for t in a] == sorted(texts.index(t) for t in a)
    assert sum(len(t) for t in a) <= 2000 or len(a) == 1
    assert roleplay.relevant_paragraphs(p, "", budget_chars=1) == [texts[0]]


def test_interview_scene():
    p = characters.get_profile("caesar")
    scene = roleplay.interview_scene(p)
    assert scene.location == "Coffee Shop - Afternoon"
    assert scene.status.startswith("Caesar is casually chatting with a man from the 21st century.")
    p.metadata = {"interview_scene": {"location": "The Senate", "status": "Caesar is speaking."}}
    assert roleplay.interview_scene(p) == Scene(location="The Senate", status="Caesar is speaking.")


# ---------------------------------------------------------------------------------------------
# Replies: render -> parse


@pytest.mark.parametrize(
    "turns",
    [
        [Turn("Beethoven", "Good day.", "speaking")],
        [Turn("Beethoven", "Who is this?", "thinking"), Turn("Beethoven", "Good day.", "speaking")],
        [Turn("Beethoven", "line one\nline two\n\nline four", "speaking")],
        [Turn("Beethoven", "A thought\nthat goes on", "thinking"), Turn("Beethoven", "Words.")],
        # escape rules: continuation lines that look like markers or start with a backslash
        [Turn("Beethoven", "First.\n(speaking) not a marker\n(thinking) nor this", "speaking")],
        [Turn("Beethoven", "First.\nBeethoven (thinking): still the same part", "speaking")],
        [Turn("Beethoven", "First.\nshe was (thinking) of you\n**(speaking)** x", "thinking")],
        [Turn("Beethoven", "First.\n\\backslash\n\\\\two\n\\(speaking) x", "speaking")],
        [Turn("Beethoven", "First.\n  (Thinking) indented\n(think) short", "speaking")],
        [Turn("Beethoven", "(speaking) a marker-looking first line", "thinking")],
    ],
)
def test_render_parse_roundtrip(turns):
    text = render_reply(turns)
    want = [(t.action or "speaking", t.content) for t in turns]
    assert _parts(text) == want
    assert _parts(text, "Beethoven") == want


def test_render_escapes_continuation_lines():
    text = render_reply([Turn("B", "a\n(speaking) b\n\\c\nx (thinking) y", "thinking")])
    assert text == "(thinking) a\n\\(speaking) b\n\\\\c\n\\x (thinking) y"
    assert render_reply([Turn("B", "plain\nlines", None)]) == "(speaking) plain\nlines"


def test_parse_tolerates_unmarked_replies():
    assert _parts("Hello there.\nI am Beethoven.") == [
        ("speaking", "Hello there.\nI am Beethoven.")
    ]
    assert _parts("") == [] and _parts("   \n  ") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Beethoven (speaking): Hello!", [("speaking", "Hello!")]),
        (
            "Beethoven (thinking): Who?\nBeethoven (speaking): Hi.",
            [("thinking", "Who?"), ("speaking", "Hi.")],
        ),
        ("**Beethoven (thinking):** hm", [("thinking", "** hm")]),
        ("(think) hm\n(speak) yes", [("thinking", "hm"), ("speaking", "yes")]),
        ("(THINKING) hm", [("thinking", "hm")]),
        ("  (speaking)   spaced", [("speaking", "spaced")]),
        ("Ludwig van Beethoven (speaking): full name", [("speaking", "full name")]),
        # another speaker's label is not the character's marker: it stays in the text
        ("Hello.\nMan (speaking): Where?", [("speaking", "Hello.\nMan (speaking): Where?")]),
        ("Preamble\n(thinking) x", [("speaking", "Preamble"), ("thinking", "x")]),
        ("(thinking)\n(speaking) only words", [("speaking", "only words")]),
    ],
)
def test_parse_tolerant_labels(text, expected):
    assert _parts(text, "Beethoven") == expected


def test_spoken_and_thoughts():
    text = "(thinking) A stranger.\n(speaking) Good day!\n(thinking) Odd.\n(speaking) Sit."
    assert roleplay.spoken(text, "Beethoven") == "Good day!\nSit."
    assert roleplay.thoughts(text, "Beethoven") == "A stranger.\nOdd."
    assert roleplay.spoken("no markers at all") == "no markers at all"
    assert roleplay.thoughts("no markers at all") == ""


_FRAGMENTS = st.sampled_from(
    [
        "(thinking)",
        "(speaking)",
        "(think)",
        "(Speaking)",
        "\\",
        "\n",
        " ",
        "  ",
        "Beethoven",
        "Man",
        ":",
        "**",
        "_",
        "x",
        "words here",
        "Beethoven (speaking):",
        "Man: ",
        "<|eot|>",
        "é",
        "\t",
    ]
)
_TEXT = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=12).map("".join)
_CONTENT = _TEXT.map(str.strip).filter(bool)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["thinking", "speaking"]), _CONTENT), min_size=1, max_size=4
    ),
    st.sampled_from([None, "Beethoven", "Man"]),
)
def test_property_render_parse_identity(parts, name):
    turns = [Turn("Beethoven", content, action) for action, content in parts]
    assert _parts(render_reply(turns), name) == parts


# ---------------------------------------------------------------------------------------------
# Turns <-> chat messages


DIALOGUE = [
    Turn("Man", "Good afternoon."),
    Turn("Beethoven", "A visitor? Speak up!", "thinking"),
    Turn("Beethoven", "Who are you?", "speaking"),
    Turn("Man", "A friend from Bonn."),
    Turn("Waldstein", "He means well.\nNote: he brought wine."),
    Turn("Beethoven", "Bonn!\n(speaking) I miss it.\n\\ old days", "speaking"),
    Turn("Man", "Shall we drink?\n\\escaped?\nA: B"),
]


def test_to_messages_shape():
    msgs = to_messages("Beethoven", "Ludwig van Beethoven", SCENE, DIALOGUE)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == roleplay.system_message("Ludwig van Beethoven", SCENE)
    assert msgs[1]["content"] == "Man: Good afternoon."
    assert msgs[2]["content"] == "(thinking) A visitor? Speak up!\n(speaking) Who are you?"
    assert msgs[3]["content"].startswith("Man: A friend from Bonn.\nWaldstein: He means well.\n")
    custom = to_messages("Beethoven", "x", SCENE, DIALOGUE[:1], system="SYSTEM")
    assert custom[0] == {"role": "system", "content": "SYSTEM"}


def test_to_from_messages_roundtrip():
    msgs = to_messages("Beethoven", "Ludwig van Beethoven", SCENE, DIALOGUE)
    assert from_messages("Beethoven", msgs) == DIALOGUE


def test_from_messages_tolerates_bare_user_text():
    msgs = [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": "hello there\nsecond line"},
        {"role": "assistant", "content": "Hi."},
    ]
    assert from_messages("Beethoven", msgs) == [
        Turn(roleplay.DEFAULT_USER, "hello there\nsecond line"),
        Turn("Beethoven", "Hi.", "speaking"),
    ]


def test_user_line_for_the_chat_user():
    assert roleplay.user_line(None, "Hello") == "Hello"
    assert roleplay.user_line("Man", "Hello") == "Man: Hello"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Man", "Beethoven", "Waldstein"]),
            st.sampled_from(["thinking", "speaking"]),
            _CONTENT,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_property_to_from_messages(rows):
    turns = [
        Turn(role, content, action if role == "Beethoven" else None)
        for role, action, content in rows
    ]
    msgs = to_messages("Beethoven", "Ludwig van Beethoven", SCENE, turns)
    back = from_messages("Beethoven", msgs)
    # a user line whose content is only "Name: ..." text is ambiguous by design; compare the rest
    if all(": " not in t.content.split("\n")[0] for t in turns if t.role != "Beethoven"):
        assert back == turns


# ---------------------------------------------------------------------------------------------
# Character-LLM's prompted SFT format


@pytest.mark.parametrize("slug", ["beethoven", "mlk", "cleopatra"])
def test_character_llm_prompt_roundtrip(slug):
    p = characters.get_profile(slug)
    scene = roleplay.interview_scene(p)
    prompt = character_llm_prompt(p.name, scene)
    assert prompt.startswith(roleplay.meta_prompt(p.name))
    assert "The status of you is as follows:\nLocation: Coffee Shop - Afternoon\nStatus: " in prompt
    assert prompt.endswith("The interactions are as follows:\n\n")
    assert parse_character_llm_prompt(prompt) == (p.name, scene.location, scene.status)


def test_character_llm_output_roundtrip():
    turns = [
        Turn("Man", "Where were you born?"),
        Turn("Beethoven", "He wants my story.", "thinking"),
        Turn("Beethoven", "In Bonn,\non the Rhine.", "speaking"),
        Turn("Man", "Thank you."),
    ]
    out = character_llm_output(turns)
    assert out.split("\n")[0] == "Man (speaking): Where were you born?<|eot|>"
    assert "Beethoven (thinking): He wants my story.<|eot|>" in out
    assert parse_character_llm_output(out, "Beethoven") == turns


def test_parse_character_llm_output_from_the_paper():
    out = (
        "Beethoven (thinking): A man in strange clothes.<|eot|>\n"
        "Man (speaking): Hello, Mr. Beethoven.<|eot|>\n"
        "Beethoven (speaking): Speak louder!<|eot|>\n"
        "Beethoven (speaking):<|eot|>\n"
    )
    assert parse_character_llm_output(out, "Beethoven") == [
        Turn("Beethoven", "A man in strange clothes.", "thinking"),
        Turn("Man", "Hello, Mr. Beethoven."),
        Turn("Beethoven", "Speak louder!", "speaking"),
    ]


def test_parse_character_llm_prompt_partial():
    assert parse_character_llm_prompt("nothing here") == (None, None, None)

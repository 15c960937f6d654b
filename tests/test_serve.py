"""charlite serve without a model: request checks, role-play prompts, thought filtering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlite import roleplay
from charlite.characters import get_profile
from charlite.serve import protocol
from charlite.serve.protocol import APIError, build_prompt, gen_params, parse_request
from charlite.serve.thoughts import ThoughtFilter, visible_text


def _count(text: str) -> int:
    return max(1, len(text) // 4)


def _prompt(body: dict, n_ctx: int = 2048, max_tokens: int = 200, prompted: bool = True):
    req = parse_request({"model": "beethoven", **body})
    return build_prompt(
        get_profile("beethoven"),
        req,
        prompted=prompted,
        count_tokens=_count,
        n_ctx=n_ctx,
        max_tokens=max_tokens,
    )


def test_prompt_follows_the_roleplay_format():
    prompt = _prompt(
        {
            "messages": [
                {"role": "system", "content": "Answer in one sentence."},
                {"role": "user", "content": "Where were you born?"},
                {"role": "assistant", "content": "In Bonn."},
                {"role": "user", "content": "And your teacher?", "name": "Anna"},
            ]
        }
    )
    msgs = prompt.messages
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    profile = get_profile("beethoven")
    character_system = roleplay.profile_system_message(
        profile, prompted=True, query="Where were you born?"
    )
    # the character's own system message first, the client's after it
    assert msgs[0]["content"] == character_system + "\n\nAnswer in one sentence."
    assert msgs[0]["content"].startswith(roleplay.meta_prompt("Ludwig van Beethoven"))
    assert msgs[1]["content"] == "Visitor: Where were you born?"
    assert msgs[2]["content"] == "(speaking) In Bonn."
    assert msgs[3]["content"] == "Anna: And your teacher?"


def test_trained_prompt_has_no_knowledge_and_scene_can_be_set():
    prompt = _prompt(
        {
            "messages": [{"role": "user", "content": "Hello"}],
            "charlite": {"location": "A tavern", "status": "Beethoven is eating."},
        },
        prompted=False,
    )
    system = prompt.messages[0]["content"]
    assert roleplay.KNOWLEDGE_HEADER not in system
    assert "Location: A tavern\nStatus: Beethoven is eating." in system


def test_consecutive_user_messages_merge_and_parts_are_read():
    prompt = _prompt(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "One."}]},
                {"role": "user", "content": "Two.", "name": "Bob: the\nbuilder"},
            ]
        }
    )
    assert prompt.messages[1:] == [
        {"role": "user", "content": "Visitor: One.\nBob the builder: Two."}
    ]


def test_old_turns_are_dropped_to_fit_the_context():
    history = []
    for i in range(40):
        history += [
            {"role": "user", "content": f"question {i} " * 20},
            {"role": "assistant", "content": f"answer {i} " * 20},
        ]
    history.append({"role": "user", "content": "last question"})
    prompt = _prompt({"messages": history}, n_ctx=2048, max_tokens=200)
    assert prompt.dropped > 0
    assert prompt.messages[1]["role"] == "user"
    assert prompt.messages[-1]["content"] == "Visitor: last question"
    assert sum(_count(m["content"]) + 6 for m in prompt.messages) <= 2048 - 200


@pytest.mark.parametrize(
    ("body", "status", "param", "text"),
    [
        ({"messages": []}, 400, "messages", "at least 1 item"),
        (
            {"messages": [{"role": "wizard", "content": "x"}]},
            400,
            "messages.0.role",
            "Invalid value",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "temperature": 5},
            400,
            "temperature",
            "less than or equal to 2",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "n": 17}, 400, "n", "at most 16"),
        (
            {"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
            400,
            "stop",
            "at most 4",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function"}],
                "tool_choice": "required",
            },
            400,
            "tool_choice",
            "do not call tools",
        ),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            400,
            "messages",
            "at least one user message",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            400,
            "messages",
            "text only",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
            "greater than or equal to 1",
        ),
    ],
)
def test_bad_requests_name_the_field(body, status, param, text):
    with pytest.raises(APIError) as info:
        _prompt(body)
    err = info.value
    assert err.status == status and err.param == param and text in err.message
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}


def test_params_are_honoured_and_bounded():
    req = parse_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.2,
            "top_p": 0.5,
            "max_tokens": 33,
            "stop": "END",
            "seed": 7,
        }  # fmt: skip
    )
    p = gen_params(req, 2048)
    assert (p.temperature, p.top_p, p.max_tokens, p.stop, p.seed) == (0.2, 0.5, 33, ("END",), 7)
    req = parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5000}
    )
    with pytest.raises(APIError, match="does not fit"):
        gen_params(req, 2048)
    with pytest.raises(APIError, match="context_length|needs about"):
        _prompt({"messages": [{"role": "user", "content": "word " * 4000}]})
    assert parse_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "charlite": {"show_thoughts": True},
        }
    ).wants_thoughts
    assert parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "show_thoughts": True}
    ).wants_thoughts


def test_a_reply_loses_its_thoughts():
    reply = "(thinking) Who is this stranger?\n(speaking) Good day.\nSit down.\n(thinking) He looks tired."
    assert visible_text(reply, "Beethoven") == "Good day.\nSit down."
    f = ThoughtFilter("Beethoven")
    pieces = [f.feed(reply[i : i + 3]) for i in range(0, len(reply), 3)] + [f.finish()]
    assert "".join(pieces) == "Good day.\nSit down."
    assert not any("stranger" in p for p in pieces)
    assert visible_text("No markers at all.", "Beethoven") == "No markers at all."
    assert visible_text("(thinking) Only a thought.", "Beethoven") == "Only a thought."


_PIECES = st.sampled_from(
    ["(thinking) ", "(speaking) ", "(speaking)", "Beethoven (speaking): ", "Man (thinking): ",
     "*Beethoven (think)* ", "\n", " ", "  ", "Hello", "world.", "\\", "\\(speaking) x", "(think)", "a:b", "\t"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=25), st.lists(st.integers(1, 7), max_size=30))
def test_streamed_filtering_matches_roleplay_and_ignores_chunking(parts, cuts):
    reply = "".join(parts)
    name = "Beethoven"
    expected = roleplay.spoken(reply, name) or roleplay.thoughts(reply, name) or reply.strip()
    assert visible_text(reply, name) == expected
    f = ThoughtFilter(name)
    out, i = [], 0
    for cut in cuts:
        out.append(f.feed(reply[i : i + cut]))
        i += cut
    out.append(f.feed(reply[i:]))
    out.append(f.finish())
    assert "".join(out) == expected


def test_reply_bodies_have_the_openai_shape():
    body = protocol.completion_body("chatcmpl-1", "beethoven", "Hi", "length", protocol.usage(3, 4))
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hi", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    chunk = protocol.chunk_body("chatcmpl-1", "beethoven", 1, {"content": "x"})
    assert chunk["object"] == "chat.completion.chunk" and chunk["choices"][0]["delta"] == {
        "content": "x"
    }

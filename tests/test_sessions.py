"""Chat sessions scripts can continue: the session id on stderr, --session NAME, -c, history.

Model tests run the real embedded model with short replies and are marked slow.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from charlite.backends.llamacpp import LlamaCppBackend
from charlite.cli import cli
from charlite.history import History
from charlite.trim import trim_incomplete

SHORT = ["--max-tokens", "12", "--seed", "1", "--knowledge", "off"]  # prompts as sent, no recall


@pytest.fixture
def spy(monkeypatch):
    """The messages and the raw reply of every llama.cpp generation (the real model runs)."""
    calls: list[dict] = []
    original = LlamaCppBackend.stream

    def stream(self, messages, params=None):
        call = {"messages": [dict(m) for m in messages], "text": "", "reason": None}
        calls.append(call)
        for delta in original(self, messages, params):
            call["text"] += delta.text
            call["reason"] = delta.finish_reason or call["reason"]
            yield delta

    monkeypatch.setattr(LlamaCppBackend, "stream", stream)
    return calls


def _session_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("session: ")]
    assert len(lines) == 1, stderr
    return lines[0].removeprefix("session: ")


def _one_line_error(result, *expected):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.slow
def test_two_continue_calls_share_one_session(spy, charlite_home):
    runner = CliRunner()
    first = runner.invoke(
        cli, ["chat", "beethoven", "-m", "Where were you born?", "--continue", *SHORT]
    )
    assert first.exit_code == 0, first.output
    sid = _session_line(first.stderr)
    second = runner.invoke(cli, ["chat", "beethoven", "-m", "And your teacher?", "-c", *SHORT])
    assert second.exit_code == 0, second.output
    assert _session_line(second.stderr) == sid
    h = History()
    assert [s.id for s in h.sessions("beethoven")] == [sid]
    turns = h.turns(sid)
    h.close()
    assert [t.role for t in turns] == ["user", "assistant"] * 2
    # the second prompt holds the first exchange, as shown and stored
    assert spy[1]["messages"][1:] == [
        {"role": "user", "content": "Where were you born?"},
        {"role": "assistant", "content": turns[1].content},
        {"role": "user", "content": "And your teacher?"},
    ]


@pytest.mark.slow
def test_named_sessions_cut_replies_and_history_export(spy, charlite_home):
    runner = CliRunner()
    args = ["chat", "beethoven", "-m", "Tell me about your life in Vienna.", "--seed", "3"]
    r = runner.invoke(cli, [*args, "--max-tokens", "24", "--session", "trimmed"])
    assert r.exit_code == 0, r.output
    assert _session_line(r.stderr) == "trimmed"  # a new session under the chosen name
    assert spy[0]["reason"] == "length"  # 24 tokens cannot hold this answer
    raw = runner.invoke(cli, [*args, "--max-tokens", "24", "--session", "raw", "--no-trim", "-q"])
    assert raw.exit_code == 0, raw.output
    assert raw.stderr == ""  # --quiet: no session line
    h = History()
    (trimmed,) = [t for t in h.turns("trimmed") if t.role == "assistant"]
    (kept,) = [t for t in h.turns("raw") if t.role == "assistant"]
    h.close()
    assert trimmed.cut and kept.cut
    assert trimmed.content == trim_incomplete(spy[0]["text"])  # what was shown is stored
    assert kept.content == spy[1]["text"]

    listing = json.loads(runner.invoke(cli, ["history", "beethoven", "--format", "json"]).stdout)
    assert sorted((row["id"], row["turns"]) for row in listing) == [("raw", 2), ("trimmed", 2)]
    assert {row["model"] for row in listing} == {"embedded (prompted)"}
    record = json.loads(runner.invoke(cli, ["history", "trimmed", "--format", "json"]).stdout)
    assert record["turns"][0]["content"] == "Tell me about your life in Vienna."
    assert record["turns"][1]["cut"] is True
    md = runner.invoke(cli, ["history", "trimmed"]).stdout
    assert md.startswith("# Chat with Ludwig van Beethoven") and "(cut at the token limit)" in md
    # a session of another character is refused before any model loads
    other = runner.invoke(cli, ["chat", "socrates", "-m", "hi", "--session", "raw"])
    _one_line_error(other, "session 'raw' is a chat with 'beethoven'")


@pytest.mark.parametrize("name", ["", "a\n", "work\n", "../up", "a/b", "-x", "x" * 65, "bad name"])
def test_bad_session_names_are_one_line_and_create_nothing(name, charlite_home):
    r = CliRunner().invoke(cli, ["chat", "beethoven", "-m", "hi", "--session", name])
    _one_line_error(r, "invalid session name")
    assert not (charlite_home / "history.sqlite").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["--max-tokens", "-5"], "--max-tokens must be at least 1"),
        (["--model", "gguf:/no/such/model.gguf"], "does not exist"),
        (["--model", "what-is-this"], "unknown model spec"),
        (["--session", "a", "--continue"], "not both"),
    ],
)
def test_a_failed_chat_creates_no_history(args, expected, charlite_home):
    r = CliRunner().invoke(cli, ["chat", "beethoven", "-m", "hi", *args])
    _one_line_error(r, expected)
    assert not (charlite_home / "history.sqlite").exists()


def test_history_lists_and_shows(charlite_home):
    runner = CliRunner()
    empty = runner.invoke(cli, ["history"])
    assert empty.exit_code == 0 and "no chat sessions" in empty.stdout
    assert not (charlite_home / "history.sqlite").exists()
    h = History()
    a = h.new_session("beethoven", "embedded (prompted)", "Bonn", "A visit.")
    h.add_turn(a, "user", "", "Hello")
    h.add_turn(a, "assistant", "Beethoven", "Good day. I am", cut=True)
    b = h.new_session("socrates", "gguf:x.gguf (prompted)", sid="agora")
    h.close()
    table = runner.invoke(cli, ["history"], env={"COLUMNS": "200"}).stdout
    assert a in table and "agora" in table and "socrates" in table
    only = json.loads(runner.invoke(cli, ["history", "socrates", "--format", "json"]).stdout)
    assert [r["id"] for r in only] == [b]
    md = runner.invoke(cli, ["history", a]).stdout
    assert "**You:** Hello" in md and "*(cut at the token limit)*" in md
    out = charlite_home / "chat.md"
    r = runner.invoke(cli, ["history", "--session", a, "-o", str(out)])
    assert r.exit_code == 0 and out.read_text().startswith("# Chat with Ludwig van Beethoven")
    missing = runner.invoke(cli, ["history", "--session", "nope"])
    _one_line_error(missing, "no chat session 'nope'")
    unknown = runner.invoke(cli, ["history", "nobody"])
    _one_line_error(unknown, "no character 'nobody'")


def test_latest_session_is_the_most_recently_used(charlite_home):
    h = History()
    old = h.new_session("beethoven", "m")
    new = h.new_session("beethoven", "m")
    assert h.latest("beethoven").id == new
    h.add_turn(old, "user", "", "back to the old one")
    assert h.latest("beethoven").id == old
    assert h.latest("socrates") is None
    h.close()


def test_trim_incomplete():
    assert (
        trim_incomplete("(speaking) I was born in Bonn. My fa") == "(speaking) I was born in Bonn."
    )
    assert trim_incomplete("Yes! And then…") == "Yes! And then…"
    assert trim_incomplete("Who? Me? I never sa") == "Who? Me?"
    assert trim_incomplete("nothing ends") == "nothing ends"

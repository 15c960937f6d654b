"""`charlite chat` end to end on the real embedded model, and its bad-input paths.

Model tests keep replies short (--max-tokens) and fix the seed; they are marked slow.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlite import characters, roleplay
from charlite.backends import GenParams, get_backend
from charlite.backends.llamacpp import LlamaCppBackend
from charlite.chat import ChatSession
from charlite.cli import cli
from charlite.errors import ModelError
from charlite.history import History
from charlite.spec import parse_spec

CHARLITE = Path(sys.executable).parent / "charlite"
FIXTURES = Path(__file__).parent / "fixtures" / "profiles"
SHORT = ["--max-tokens", "24", "--seed", "1"]
PARAMS = GenParams(temperature=0.0, top_p=0.95, max_tokens=24, seed=1, repeat_penalty=1.15)
BEETHOVEN_META = roleplay.meta_prompt("Ludwig van Beethoven")


def _run(*args: str, input: str | None = None, timeout: int = 300, env: dict | None = None):
    """The real console script in its own process."""
    return subprocess.run(
        [str(CHARLITE), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _assert_one_line_error(returncode: int, stdout: str, stderr: str, *expected: str) -> str:
    assert returncode == 1, (returncode, stdout, stderr)
    assert "Traceback" not in stderr
    assert stdout.strip() == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def spy(monkeypatch):
    """Record the messages every llama.cpp generation is given (the real model still runs)."""
    calls: list[list[dict]] = []
    original = LlamaCppBackend.stream

    def stream(self, messages, params=None):
        calls.append([dict(m) for m in messages])
        yield from original(self, messages, params)

    monkeypatch.setattr(LlamaCppBackend, "stream", stream)
    return calls


@pytest.fixture(scope="module")
def backend():
    return get_backend("embedded")


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line, non-zero exit, no traceback (no model is loaded for these)


def _invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_unknown_character():
    r = _invoke("chat", "beethovn", "-m", "hi")
    _assert_one_line_error(r.exit_code, r.stdout, r.stderr, "did you mean 'beethoven'?")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("gguf:/nope.gguf", "model file /nope.gguf does not exist"),
        ("/nope/model.gguf", "does not exist"),
        ("llama3", "unknown model spec 'llama3'"),
        ("openai:qwen", "needs a model and a server URL"),
        ("hf:HuggingFaceTB/SmolLM2-135M", "cannot chat"),
    ],
)
def test_bad_model_spec_or_missing_file(spec, expected):
    result = CliRunner().invoke(cli, ["chat", "beethoven", "-m", "hi", "--model", spec])
    _assert_one_line_error(result.exit_code, result.stdout, result.stderr, expected)


def test_corrupt_model_random_bytes(tmp_path):
    bad = tmp_path / "random.gguf"
    bad.write_bytes(os.urandom(1 << 20))
    out = _run("chat", "beethoven", "-m", "hi", "--model", f"gguf:{bad}")
    _assert_one_line_error(out.returncode, out.stdout, out.stderr, str(bad), "not a valid GGUF")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + os.urandom(1 << 16))
    r = _invoke("chat", "beethoven", "-m", "hi", "--model", str(fake))
    _assert_one_line_error(r.exit_code, r.stdout, r.stderr, "not a valid GGUF")


def test_malformed_user_profile(charlite_home):
    folder = charlite_home / "characters" / "broken"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "bad_facts.md", folder / "profile.md")
    r = _invoke("chat", "broken", "-m", "hi")
    _assert_one_line_error(
        r.exit_code, r.stdout, r.stderr, "profile.md", "field 'facts.0.answer_keywords'"
    )


def test_unwritable_charlite_home(tmp_path):
    """Tests run as root (chmod does not stop root), so the home sits under a regular file."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    home = blocker / "sub"
    r = _invoke("chat", "beethoven", "-m", "hi", env={"CHARLITE_HOME": str(home)})
    _assert_one_line_error(
        r.exit_code, r.stdout, r.stderr, f"cannot create {home}", "CHARLITE_HOME"
    )
    out = _run("chat", "beethoven", "-m", "hi", env={"CHARLITE_HOME": str(home)})  # real process
    _assert_one_line_error(out.returncode, out.stdout, out.stderr, "cannot create")
    if os.geteuid() != 0:  # pragma: no cover - a read-only folder only stops non-root users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = _run("chat", "beethoven", "-m", "hi", env={"CHARLITE_HOME": str(ro)})
        _assert_one_line_error(out.returncode, out.stdout, out.stderr, "CHARLITE_HOME")


# ---------------------------------------------------------------------------------------------
# Corrupt models that get past the cheap checks


@pytest.mark.slow
def test_corrupt_model_truncated_copy(tmp_path, embedded_path):
    cut = tmp_path / "cut.gguf"
    with open(embedded_path, "rb") as src:
        cut.write_bytes(src.read(embedded_path.stat().st_size // 2))
    out = _run("chat", "beethoven", "-m", "hi", "--model", f"gguf:{cut}")
    _assert_one_line_error(out.returncode, out.stdout, out.stderr, "not a valid GGUF file")


@pytest.mark.slow
def test_corrupt_model_llama_cpp_refuses(tmp_path, embedded_path):
    """A well-formed GGUF that llama.cpp cannot load (unknown architecture): no abort."""
    data = bytearray(embedded_path.read_bytes())
    at = data.find(b"llama", data.find(b"general.architecture"))
    data[at : at + 5] = b"llamx"
    bad = tmp_path / "arch.gguf"
    bad.write_bytes(bytes(data))
    out = _run("chat", "beethoven", "-m", "hi", "--model", f"gguf:{bad}")
    _assert_one_line_error(out.returncode, out.stdout, out.stderr, "could not load", str(bad))


# ---------------------------------------------------------------------------------------------
# The real model


@pytest.mark.slow
def test_the_issue_command_in_a_real_process(charlite_home):
    out = _run("chat", "beethoven", "-m", "Where were you born?", timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert "Traceback" not in out.stderr
    h = History()
    (session,) = h.sessions("beethoven")
    # llama.cpp's native log is silenced: stderr holds only the session id, for scripts
    assert out.stderr.strip() == f"session: {session.id}"
    assert [t.role for t in h.turns(session.id)] == ["user", "assistant"]
    h.close()


@pytest.mark.slow
def test_one_message_then_resume_the_session(spy, charlite_home):
    profile = characters.get_profile("beethoven")
    runner = CliRunner()
    # --knowledge off: exactly the prompts charlite always rendered (tests/test_knowledge.py
    # checks the prompts with knowledge on)
    first = runner.invoke(
        cli,
        ["chat", "beethoven", "-m", "Where were you born?", "--knowledge", "off", *SHORT],
        catch_exceptions=False,
    )
    assert first.exit_code == 0, first.output
    assert first.stdout.strip()

    (sent,) = spy
    system = sent[0]
    assert system["role"] == "system"
    assert system["content"].startswith(BEETHOVEN_META)
    assert (
        f"Location: {profile.scene.location}\nStatus: {profile.scene.status}" in system["content"]
    )
    assert roleplay.KNOWLEDGE_HEADER in system["content"]  # prompted mode: profile paragraphs
    assert "Bonn" in system["content"]
    assert sent[1:] == [{"role": "user", "content": "Where were you born?"}]

    h = History()
    (session,) = h.sessions("beethoven")
    turns = h.turns(session.id)
    assert [(t.role, t.content) for t in turns][0] == ("user", "Where were you born?")
    first_reply = turns[1].content
    assert turns[1].role == "assistant" and first_reply.strip()
    assert session.model == "embedded (prompted)"

    second = runner.invoke(
        cli,
        [
            "chat",
            "beethoven",
            "--session",
            session.id,
            "-m",
            "Who was your father?",
            "--knowledge",
            "off",
            *SHORT,
        ],  # fmt: skip
        catch_exceptions=False,
    )
    assert second.exit_code == 0, second.output
    assert second.stdout.strip()
    resumed = spy[1]
    assert resumed[0] == system  # the same system message: a byte-stable prefix
    assert resumed[1:] == [
        {"role": "user", "content": "Where were you born?"},
        {"role": "assistant", "content": first_reply},
        {"role": "user", "content": "Who was your father?"},
    ]
    assert len(h.sessions("beethoven")) == 1
    assert [t.role for t in h.turns(session.id)] == ["user", "assistant", "user", "assistant"]
    h.close()


@pytest.mark.slow
def test_stdin_one_message_per_line_with_scene(spy, charlite_home):
    result = CliRunner().invoke(
        cli,
        [
            "chat",
            "beethoven",
            "--location",
            "Bonn, 1787",
            "--status",
            "Beethoven mourns his mother.",
            "--knowledge",
            "off",
            *SHORT,
        ],
        input="Good day, maestro.\n\n   \nWhat is your name?\n",
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert len(spy) == 2  # blank lines are skipped
    for sent in spy:
        assert sent[0]["content"].startswith(BEETHOVEN_META)
        assert "Location: Bonn, 1787\nStatus: Beethoven mourns his mother." in sent[0]["content"]
    assert spy[0][1:] == [{"role": "user", "content": "Good day, maestro."}]
    assert spy[1][1]["content"] == "Good day, maestro."
    assert spy[1][2]["role"] == "assistant"
    assert spy[1][3] == {"role": "user", "content": "What is your name?"}
    assert result.stdout.strip()

    h = History()
    (session,) = h.sessions("beethoven")
    assert (session.location, session.status) == ("Bonn, 1787", "Beethoven mourns his mother.")
    assert [t.role for t in h.turns(session.id)] == ["user", "assistant"] * 2
    h.close()


@pytest.mark.slow
def test_session_errors(charlite_home):
    h = History()
    other = h.new_session("socrates", "embedded (prompted)")
    h.close()
    runner = CliRunner()
    # (an unknown --session NAME starts a session of that name: tests/test_sessions.py)
    wrong = runner.invoke(cli, ["chat", "beethoven", "--session", other, "-m", "hi", *SHORT])
    _assert_one_line_error(
        wrong.exit_code, wrong.stdout, wrong.stderr, f"session '{other}' is a chat with 'socrates'"
    )


@pytest.mark.slow
def test_message_longer_than_the_context(charlite_home):
    result = CliRunner().invoke(cli, ["chat", "beethoven", "-m", "word " * 3000, *SHORT])
    _assert_one_line_error(result.exit_code, result.stdout, result.stderr, "model's context")


@pytest.mark.slow
def test_chat_session_prompt_and_history(backend, charlite_home):
    profile = characters.get_profile("beethoven")
    history = History()
    session = ChatSession(profile, backend, history=history, params=PARAMS)
    assert session.messages() == [{"role": "system", "content": session.system}]
    reply = session.reply("Where were you born?")
    assert reply.strip()
    msgs = session.messages()
    assert msgs[0]["content"].startswith(BEETHOVEN_META)
    assert msgs[0]["content"].endswith(roleplay.INTERACTIONS_HEADER)
    assert msgs[1] == {"role": "user", "content": "Where were you born?"}
    assert msgs[2]["role"] == "assistant" and msgs[2]["content"].strip() == reply
    assert session.spoken(reply)
    stored = history.turns(session.session_id)
    assert [(t.role, t.speaker) for t in stored] == [("user", ""), ("assistant", "Beethoven")]

    # same seed, temperature 0: a fresh session gives the same reply
    again = ChatSession(profile, backend, history=history, params=PARAMS)
    assert again.reply("Where were you born?") == reply

    # a new scene changes the system message, and is stored
    session.set_scene("Heiligenstadt", "Beethoven is writing a letter.")
    assert "Location: Heiligenstadt\nStatus: Beethoven is writing a letter." in session.system
    row = history.session(session.session_id)
    assert (row.location, row.status) == ("Heiligenstadt", "Beethoven is writing a letter.")
    old = session.session_id
    session.reset()
    assert session.session_id != old and session.turns == []
    history.close()


@pytest.mark.slow
def test_interrupted_reply_keeps_what_was_said(backend, charlite_home):
    profile = characters.get_profile("beethoven")
    history = History()
    session = ChatSession(profile, backend, history=history, params=PARAMS.with_(max_tokens=64))
    stream = session.stream("Tell me the story of your life.")
    said = ""
    for i, delta in enumerate(stream):
        said += delta.text
        if i == 3:
            break
    stream.close()  # what Ctrl-C does in the interactive loop
    assert said.strip()
    assert session.turns[-1].role == "Beethoven" and session.turns[-1].content == said
    stored = history.turns(session.session_id)
    assert [t.role for t in stored] == ["user", "assistant"] and stored[1].content == said
    # the model is free again and the session goes on
    assert session.reply("Go on.").strip()
    assert len(history.turns(session.session_id)) == 4
    history.close()


@pytest.mark.slow
def test_history_trimming_when_the_context_fills(charlite_home):
    small = LlamaCppBackend(parse_spec("embedded"), n_ctx=512)
    assert small.n_ctx == 512
    profile = characters.get_profile("beethoven")
    history = History()
    sid = history.new_session("beethoven", "embedded", "Vienna", "At the piano.")
    n = 30
    for i in range(n):
        if i % 2 == 0:
            history.add_turn(sid, "user", "", f"Question {i}: tell me about the year 18{i:02d}?")
        else:
            history.add_turn(
                sid,
                "assistant",
                "Beethoven",
                f"(speaking) Answer {i}: that year I worked on sonatas and quarrelled with "
                "my publishers, my landlord and my brother over money and noise.",
            )
    session = ChatSession(
        profile, small, prompted=False, history=history, session_id=sid, params=PARAMS
    )
    assert len(session.turns) == n

    msgs = session.messages()
    assert msgs[0] == {"role": "system", "content": session.system}
    assert session.system.startswith(BEETHOVEN_META)
    kept = msgs[1:]
    dropped = n - len(kept)
    assert dropped >= 4  # oldest turns go in a block, not one by one
    assert [m["content"] for m in kept] == [t.content for t in session.turns[dropped:]]
    assert len(small.prompt_tokens(msgs)) <= small.n_ctx - PARAMS.max_tokens
    assert session.messages() == msgs  # stable until the context fills again

    reply = session.reply("Where were you born?")
    assert reply.strip()
    after = session.messages()
    assert after[0] == msgs[0]
    assert after[1 : len(kept) + 1] == kept  # no new trimming: the prefix is byte-stable
    assert after[-1]["role"] == "assistant"
    # nothing is ever deleted from the database
    stored = history.turns(sid)
    assert len(stored) == n + 2
    assert stored[0].content.startswith("Question 0:")
    history.close()


@pytest.mark.slow
def test_prompted_chat_on_a_tiny_context_never_crashes(charlite_home):
    """The prompted system message alone is ~575 tokens: a 512-token context cannot answer."""
    small = LlamaCppBackend(parse_spec("embedded"), n_ctx=512)
    profile = characters.get_profile("beethoven")
    session = ChatSession(profile, small, prompted=True, params=PARAMS)
    try:
        assert session.reply("Hello?").strip()
    except ModelError as exc:
        assert "context" in str(exc) and "\n" not in str(exc)


# ---------------------------------------------------------------------------------------------
# The interactive loop, in a real terminal


class Terminal:
    def __init__(self, *args: str):
        self.master, slave = pty.openpty()
        env = {**os.environ, "TERM": "dumb", "COLUMNS": "200", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [str(CHARLITE), *args], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.seen = ""
        self.cursor = 0  # expect() looks only at what came after the previous match

    def expect(self, pattern: str, timeout: float = 240) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.seen[self.cursor :])
            if m:
                found = self.seen[self.cursor : self.cursor + m.end()]
                self.cursor += m.end()
                return found
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                self.seen += chunk.decode("utf-8", "replace")
        raise AssertionError(f"{pattern!r} not seen; output so far:\n{self.seen[-3000:]}")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


@pytest.mark.slow
def test_interactive_session_in_a_terminal(charlite_home):
    term = Terminal("chat", "beethoven", "--max-tokens", "48", "--seed", "3")
    try:
        term.expect(r"/help for commands")
        term.expect(r"you>")
        term.send("/help\n")
        term.expect(r"/scene LOCATION \| STATUS")
        term.send("/bogus\n")
        term.expect(r"unknown command /bogus")
        term.send("/scene Bonn | Beethoven is resting.\n")
        term.expect(r"scene: Bonn")
        term.send("Good evening!\n")
        term.expect(r"Beethoven>")
        term.expect(r"you>")
        term.send("/history\n")
        term.expect(r"Good evening!")
        # Ctrl-C during a reply stops that reply and keeps the session
        term.send("Tell me the whole story of your life, from the beginning.\n")
        term.expect(r"Beethoven>")
        term.proc.send_signal(signal.SIGINT)
        term.expect(r"\(interrupted\)")
        term.expect(r"you>")
        term.send("/thoughts\n")
        term.expect(r"thoughts shown")
        term.send("/exit\n")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert "Traceback" not in term.seen
    h = History()
    (session,) = h.sessions("beethoven")
    assert (session.location, session.status) == ("Bonn", "Beethoven is resting.")
    turns = h.turns(session.id)
    users = [t.content for t in turns if t.role == "user"]
    # a reply interrupted before it started leaves no trace; one interrupted later keeps its
    # question (and what was said so far)
    assert users in (
        ["Good evening!"],
        ["Good evening!", "Tell me the whole story of your life, from the beginning."],
    )
    assert turns[0].content == "Good evening!" and turns[1].role == "assistant"
    h.close()


@pytest.mark.slow
def test_interactive_ctrl_d_leaves(charlite_home):
    term = Terminal("chat", "beethoven")
    try:
        term.expect(r"you>")
        term.send("\x04")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()

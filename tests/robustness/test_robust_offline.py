"""The offline guarantee: tests (and charlite's default commands) never reach the network.

tests/conftest.py installs the network guard of helpers.py for the whole test session; here it
is shown to block, and the default commands run in real processes with the same guard.
Nothing here sends a packet anywhere but this machine: the guard raises before the system call.
"""

from __future__ import annotations

import socket

import pytest
from helpers import is_loopback, run_cli


def _assert_blocked(call):
    with pytest.raises(OSError, match="blocked in tests"):
        call()


def test_non_loopback_connections_raise_before_any_syscall():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.01)
        _assert_blocked(lambda: sock.connect(("10.255.255.1", 9)))
        _assert_blocked(lambda: sock.connect_ex(("10.255.255.1", 9)))
        _assert_blocked(lambda: sock.connect(("example.com", 80)))  # no DNS lookup either
    finally:
        sock.close()
    _assert_blocked(lambda: socket.create_connection(("10.255.255.1", 9), timeout=0.01))
    _assert_blocked(lambda: socket.create_connection(("huggingface.co", 443), timeout=0.01))
    six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        _assert_blocked(lambda: six.connect(("2001:db8::1", 9, 0, 0)))
        _assert_blocked(lambda: six.connect(("::ffff:10.0.0.1", 9, 0, 0)))
    finally:
        six.close()


def test_http_clients_are_blocked_too():
    import httpx

    with pytest.raises(httpx.ConnectError, match="blocked in tests"):
        httpx.get("http://10.255.255.1:9/", timeout=0.5)


def test_loopback_still_works():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        for host in ("127.0.0.1", "localhost"):
            client = socket.create_connection((host, port), timeout=5)
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()
            client.close()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        (("127.0.0.1", 1), True),
        (("127.8.9.10", 1), True),
        (("::1", 1, 0, 0), True),
        (("localhost", 1), True),
        (("::ffff:127.0.0.1", 1, 0, 0), True),
        ("/tmp/socket", True),
        (("10.255.255.1", 9), False),
        (("0.0.0.0", 1), False),
        (("169.254.169.254", 80), False),
        (("localhost.evil.com", 1), False),
        (("::", 1, 0, 0), False),
        ((), False),
    ],
)
def test_what_counts_as_loopback(address, loopback):
    assert is_loopback(address) is loopback


DEFAULT_COMMANDS = [
    ("characters",),
    ("show", "beethoven"),
    ("modelfile", "socrates"),
    ("data", "import", "beethoven", "{fixture}"),
    ("data", "stats", "beethoven"),
    ("card", "cleopatra", "-o", "{tmp}/c.json"),
    ("add", "{tmp}/c.json", "--name", "cleo2"),
    ("doctor", "--quick"),
]


def test_default_commands_work_offline(tmp_path, charlite_home):
    from helpers import FIXTURES

    fixture = str(FIXTURES / "character_llm" / "experiences.json")
    for command in DEFAULT_COMMANDS:
        args = [a.replace("{tmp}", str(tmp_path)).replace("{fixture}", fixture) for a in command]
        out = run_cli(*args, guarded=True, timeout=300)
        assert out.returncode == 0, (args, out.output[-2000:])
        assert "blocked in tests" not in out.output, (args, out.output[-2000:])


@pytest.mark.slow
def test_chat_on_the_embedded_model_works_offline(charlite_home):
    out = run_cli(
        "chat", "beethoven", "-m", "Where were you born?", "--max-tokens", "16", "--seed", "1",
        guarded=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.output[-2000:]
    assert out.stdout.strip()
    assert "blocked" not in out.output and "Traceback" not in out.output


def test_the_guarded_command_line_blocks():
    import subprocess

    from helpers import guarded_command

    cmd = guarded_command(then="import socket; socket.create_connection(('10.255.255.1', 9), 1)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "NetworkBlocked: network access to ('10.255.255.1', 9) is blocked" in proc.stderr


def test_a_remote_server_under_the_guard_is_one_clean_error(tmp_path):
    """charlite under the guard: a chat with a non-loopback server fails with one line."""
    out = run_cli(
        "chat", "beethoven", "-m", "hi", "--model", "openai:m@http://10.255.255.1:9/v1",
        guarded=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.output
    assert "Traceback" not in out.output
    assert "10.255.255.1" in out.stderr

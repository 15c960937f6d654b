"""`charlite pull` against a stand-in Hub on loopback (HF_ENDPOINT): no test reaches the real Hub.

The CLI runs in its own process: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it
is imported, and `kill -9` needs a process to kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charlite.gguf import file_sha256
from tests.hub_standin import StandInHub

REPO = "charlite-test/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m-instruct"


@pytest.fixture
def hub(embedded_path):
    with StandInHub({REPO: {FILE: embedded_path, "README.md": Path(__file__)}}) as h:
        yield h


def _env(hub: StandInHub, home: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CHARLITE_HOME": str(home),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home.parent / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_COLOR": "1",
    }
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


def _pull(hub, home, *args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlite", "pull", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(hub, home, **extra),
    )


def _one_line_error(result, *expected: str) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _no_model_left(home: Path) -> None:
    models = home / "models"
    assert not list(models.glob("*/manifest.json"))
    assert not [p for p in models.glob("*/*.gguf")]


def test_pull_verifies_and_names_the_model(hub, charlite_home, embedded_path):
    result = _pull(hub, charlite_home, f"{REPO}:Q4_1")
    assert result.returncode == 0, result.stderr
    assert f"pulled {NAME}" in result.stdout
    final = charlite_home / "models" / NAME / FILE
    assert file_sha256(final) == file_sha256(embedded_path)
    manifest = json.loads((charlite_home / "models" / NAME / "manifest.json").read_text())
    assert manifest["repo"] == REPO and manifest["sha256"] == file_sha256(embedded_path)
    assert not (charlite_home / "models" / ".downloads" / NAME).exists()
    # the short name is a model spec everywhere
    from charlite.spec import parse_spec

    assert parse_spec(NAME).gguf_path() == final
    # pulling again fetches nothing
    gets = sum(1 for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p)
    again = _pull(hub, charlite_home, REPO)  # one GGUF in the repo: no quant needed
    assert again.returncode == 0, again.stderr
    assert f"already pulled {NAME}" in again.stdout
    assert sum(1 for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p) == gets


@pytest.mark.slow
def test_kill_9_mid_download_then_resume(hub, charlite_home, embedded_path):
    hub.delay = 0.05  # ~5 MB/s: the download takes ~20 s unless killed
    part = charlite_home / "models" / ".downloads" / NAME / (FILE + ".part")
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlite", "pull", REPO, "--quiet"],
        env=_env(hub, charlite_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if part.exists() and part.stat().st_size > 4 * 1024 * 1024:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never started")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = part.stat().st_size
    size = embedded_path.stat().st_size
    assert 0 < kept < size
    _no_model_left(charlite_home)

    hub.delay = 0.0
    hub.requests.clear()
    result = _pull(hub, charlite_home, REPO, "--quiet")
    assert result.returncode == 0, result.stderr
    ranges = [r for m, p, r in hub.requests if m == "GET" and "/resolve/" in p]
    assert ranges == [f"bytes={kept}-"]  # only the missing bytes were asked for
    final = charlite_home / "models" / NAME / FILE
    assert file_sha256(final) == file_sha256(embedded_path)


def test_a_corrupted_byte_is_detected(hub, charlite_home, embedded_path):
    hub.corrupt_at = embedded_path.stat().st_size // 2
    result = _pull(hub, charlite_home, REPO, "--quiet")
    _one_line_error(result, "corrupt", "sha256", "pull again")
    _no_model_left(charlite_home)
    assert not list((charlite_home / "models").rglob("*.part"))


@pytest.mark.parametrize(
    "repo, expected",
    [
        ("missing/nothing-GGUF", ["no repository missing/nothing-GGUF"]),
        ("private/secret-GGUF", ["needs a login (401)", "HF_TOKEN"]),
        ("gated/licensed-GGUF", ["gated", "HF_TOKEN"]),
    ],
)
def test_hub_refusals_are_one_line(hub, charlite_home, repo, expected):
    _one_line_error(_pull(hub, charlite_home, repo), *expected)
    _no_model_left(charlite_home)


def test_no_file_matching_the_quant(hub, charlite_home):
    _one_line_error(_pull(hub, charlite_home, f"{REPO}:Q8_0"), "no GGUF matching Q8_0", "Q4_1")


def test_a_file_bigger_than_the_free_disk_is_refused(hub, charlite_home):
    hub.claimed_size = 1 << 60  # an exabyte: no disk has room
    result = _pull(hub, charlite_home, REPO)
    _one_line_error(result, "not enough disk space", "CHARLITE_HOME")
    assert not [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
    _no_model_left(charlite_home)


def test_offline_is_one_line(hub, charlite_home):
    result = _pull(hub, charlite_home, REPO, HF_HUB_OFFLINE="1")
    _one_line_error(result, "HF_HUB_OFFLINE")
    assert not hub.requests


def test_unreachable_hub_is_one_line(hub, charlite_home):
    result = _pull(hub, charlite_home, REPO, HF_ENDPOINT="http://127.0.0.1:9")
    _one_line_error(result, "cannot reach http://127.0.0.1:9")


def test_bad_reference_and_curated_list(hub, charlite_home):
    _one_line_error(_pull(hub, charlite_home, "not a repo"), "not a Hub repository")
    listing = _pull(hub, charlite_home)
    assert listing.returncode == 0, listing.stderr
    assert "qwen2.5-3b" in listing.stdout and "licence" in listing.stdout
    assert not hub.requests  # the list is local

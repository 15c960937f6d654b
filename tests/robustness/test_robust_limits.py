"""Resource bounds: every limit exists, holds at its edge, and is one clear line past it.

| limit | where |
|---|---|
| profile file 5 mib | profile.MAX_PROFILE_BYTES |
| front matter: 128 levels, 500,000 values (aliases expanded) | profile.MAX_FRONT_MATTER_* |
| card file 20 mib, card chunk 5 mib (also inflated), JSON 64 levels, 200,000 values | cards |
| import file 512 mib | experience.formats.MAX_IMPORT_BYTES |
| teacher calls per record and run: --max-attempts, at most 20 | experience.pipeline |
| parallel teacher requests: --workers, at most 64 | experience.pipeline |
| persona cache 256 mib (CHARLITE_PERSONA_CACHE_MB) | persona_cache |
| staging folders of killed exports are removed | export.exporter |
"""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import ReplayTeacher, assert_one_error, invoke, run_cli

from charlite import cards, persona_cache, profile
from charlite.errors import DataError
from charlite.experience import formats, pipeline
from charlite.experience.dataset import Dataset
from charlite.files import read_jsonl

mib = 1024 * 1024


def test_the_limits_have_their_documented_values():
    found = {
        "profile file": profile.MAX_PROFILE_BYTES,
        "front matter depth": profile.MAX_FRONT_MATTER_DEPTH,
        "front matter values": profile.MAX_FRONT_MATTER_VALUES,
        "card file": cards.MAX_CARD_FILE_BYTES,
        "card chunk": cards.MAX_CHUNK_BYTES,
        "card depth": cards.MAX_DEPTH,
        "card values": cards.MAX_NODES,
        "import file": formats.MAX_IMPORT_BYTES,
        "teacher attempts": pipeline.MAX_ATTEMPTS,
        "teacher workers": pipeline.MAX_WORKERS,
        "persona cache": persona_cache.DEFAULT_MAX_BYTES,
    }
    assert found == {
        "profile file": 5 * mib,
        "front matter depth": 128,
        "front matter values": 500_000,
        "card file": 20 * mib,
        "card chunk": 5 * mib,
        "card depth": 64,
        "card values": 200_000,
        "import file": 512 * mib,
        "teacher attempts": 20,
        "teacher workers": 64,
        "persona cache": 256 * mib,
    }  # docs/robustness.md's table of limits says the same
    # a card at its own limits still makes a profile.md that reads back
    assert profile.MAX_FRONT_MATTER_DEPTH > cards.MAX_DEPTH + 8
    assert profile.MAX_FRONT_MATTER_VALUES > cards.MAX_NODES


# -------------------------------------------------------------------------------------------
# Profiles


def _profile_of_size(path, size: int) -> None:
    head = b"---\nname: Big Person\nera: '1800'\nknowledge_cutoff: 1850\n---\n\n"
    para = b"A long life, told at length. " * 30 + b"\n\n"
    body = head + para * ((size - len(head)) // len(para) + 1)
    path.write_bytes(body[: size - 1] + b".")


def test_profile_at_the_limit_is_read_and_one_byte_more_is_not(tmp_path, charlite_home):
    folder = charlite_home / "characters" / "big-person"
    folder.mkdir(parents=True)
    _profile_of_size(folder / "profile.md", profile.MAX_PROFILE_BYTES)
    assert invoke("show", "big-person").returncode == 0
    # add checks what it will write (the normalised profile, not the file read): what it
    # writes always reads back
    exact = tmp_path / "exact.md"
    _profile_of_size(exact, profile.MAX_PROFILE_BYTES)
    out = invoke("add", str(exact), "--name", "exact")
    assert out.returncode == 0, out.output
    written = charlite_home / "characters" / "exact" / "profile.md"
    assert written.stat().st_size <= profile.MAX_PROFILE_BYTES
    assert invoke("show", "exact").returncode == 0
    over = tmp_path / "over.md"
    _profile_of_size(over, profile.MAX_PROFILE_BYTES + 1)
    assert_one_error(invoke("add", str(over), "--name", "other"), "over the 5 MiB limit")


@pytest.mark.parametrize(("depth", "ok"), [(profile.MAX_FRONT_MATTER_DEPTH, True),
                                           (profile.MAX_FRONT_MATTER_DEPTH + 1, False)])  # fmt: skip
def test_front_matter_depth_limit(tmp_path, charlite_home, depth, ok):
    lists = depth - 2  # the front matter is level 1, metadata level 2
    path = tmp_path / "deep.md"
    path.write_text(f"---\nname: Deep\nmetadata: {{a: {'[' * lists}{']' * lists}}}\n---\n\nT.\n")
    out = invoke("add", str(path))
    if ok:
        assert out.returncode == 0, out.output
        assert invoke("show", "deep").returncode == 0
    else:
        assert_one_error(out, f"nested more than {profile.MAX_FRONT_MATTER_DEPTH} levels")


def test_front_matter_value_limit_counts_aliases(tmp_path, charlite_home):
    # 10 x 10 x ... aliases: a 1 kB file that would expand to 10^7 values
    text = "---\nname: Lol\nmetadata:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for prev, name in zip("abcdef", "bcdefg"):
        text += f"  {name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    path = tmp_path / "laughs.md"
    path.write_text(text + "---\n\nText.\n")
    assert_one_error(invoke("add", str(path)), "more than 500000 values")
    # a few aliases are fine
    path.write_text("---\nname: Alias\ntraits: &t [brave]\nmetadata: {t: *t}\n---\n\nText.\n")
    assert invoke("add", str(path)).returncode == 0


def test_a_card_at_the_card_depth_limit_makes_a_readable_profile(tmp_path, charlite_home):
    nested = json.loads("[" * (cards.MAX_DEPTH - 4) + "]" * (cards.MAX_DEPTH - 4))
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Deep Card", "description": "x", "extensions": {"n": nested}}}  # fmt: skip
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(card))
    out = invoke("add", str(path))
    assert out.returncode == 0, out.output
    slug = out.stdout.split("'")[1]
    assert invoke("show", slug).returncode == 0


def test_card_value_limit(tmp_path, charlite_home):
    card = {"spec": "chara_card_v2", "data": {"name": "Many", "description": "x",
                                              "extensions": {"n": [0] * cards.MAX_NODES}}}  # fmt: skip
    path = tmp_path / "many.json"
    path.write_text(json.dumps(card))
    assert_one_error(invoke("add", str(path)), f"more than {cards.MAX_NODES} JSON values")


# -------------------------------------------------------------------------------------------
# Imports


def test_import_file_over_the_limit(tmp_path, charlite_home):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as fh:  # sparse: no disk is used
        fh.truncate(formats.MAX_IMPORT_BYTES + 1)
    out = run_cli("data", "import", "beethoven", str(path), timeout=120)
    assert_one_error(out, "over the 512 MiB import limit")


# -------------------------------------------------------------------------------------------
# Teacher retries


def test_max_attempts_is_capped():
    with pytest.raises(DataError, match="at most 20"):
        pipeline.GenerateOptions(max_attempts=21).check()
    out = invoke("generate", "beethoven", "--max-attempts", "21")
    assert out.returncode == 2 and "1<=x<=20" in out.stderr


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_teacher_that_never_answers_well_is_asked_a_bounded_number_of_times(
    charlite_home, attempts
):
    args = ["generate", "beethoven", "--paragraphs", "2", "--scenes", "1", "--protective", "1",
            "--quiet", "--max-attempts", str(attempts)]  # fmt: skip
    with ReplayTeacher(delay=0.0, broken=True) as teacher:
        out = run_cli(*args, "--teacher", teacher.spec, timeout=120)
        calls = teacher.count
        tasks = 2 + 1  # two scenes (no experience without a scene) and one protective
        assert calls == 1 + tasks * attempts  # one preflight call, then the capped attempts
        assert "Traceback" not in out.output
        assert "incomplete" in out.stdout
        failures = read_jsonl(Dataset("beethoven").failures_path)
        assert len(failures) == tasks * attempts
        assert {f["reason"] for f in failures} == {"invalid_json"}
        again = run_cli(*args, "--teacher", teacher.spec, timeout=120)  # new seeds, same cap
        assert teacher.count - calls == 1 + tasks * attempts
        assert "Traceback" not in again.output
    attempts_seen = sorted((f["task"], f["attempt"]) for f in read_jsonl(
        Dataset("beethoven").failures_path))  # fmt: skip
    assert len(attempts_seen) == len(set(attempts_seen)) == 2 * tasks * attempts


# -------------------------------------------------------------------------------------------
# Persona cache


def test_persona_cache_stays_under_its_cap(tmp_path):
    cache = persona_cache.PersonaCache(tmp_path, max_bytes=10_000)
    for i in range(20):
        cache.save(f"key{i:02d}", [1, 2, 3], bytes([i]) * 3000)
        assert cache.size() <= 10_000
    assert len(cache.entries()) == 3
    assert cache.load("key19") is not None and cache.load("key00") is None
    cache.save("huge", [1], b"x" * 20_000)  # bigger than the whole cache: not kept
    assert cache.load("huge") is None and cache.size() <= 10_000
    off = persona_cache.PersonaCache(tmp_path / "off", max_bytes=0)
    off.save("k", [1], b"state")
    assert off.entries() == []


def test_persona_cache_ignores_a_corrupt_entry(tmp_path):
    cache = persona_cache.PersonaCache(tmp_path, max_bytes=10_000)
    cache.save("k", [1, 2], b"state" * 10)
    (entry,) = cache.entries()
    data = entry.read_bytes()
    for bad in (data[:-1], data[:10], b"", data[:-3] + b"xyz"):
        entry.write_bytes(bad)
        assert cache.load("k") is None
        assert not entry.exists()  # removed, never handed to llama.cpp
        cache.save("k", [1, 2], b"state" * 10)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", 256 * mib), ("1", mib), ("0", 0), ("-5", 0), ("lots", 256 * mib), ("nan", 256 * mib),
     ("inf", 256 * mib), ("0.5", mib // 2)],
)  # fmt: skip
def test_persona_cache_size_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("CHARLITE_PERSONA_CACHE_MB", value)
    assert persona_cache.PersonaCache().max_bytes == expected


@pytest.mark.slow
def test_a_bad_cache_size_never_stops_a_chat(charlite_home):
    out = run_cli(
        "chat", "beethoven", "-m", "hi", "--max-tokens", "4",
        env={"CHARLITE_PERSONA_CACHE_MB": "lots"}, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.output[-2000:]


# -------------------------------------------------------------------------------------------
# Disk: what killed exports leave behind is reclaimed


def test_staging_folders_of_killed_exports_are_removed(tmp_path):
    from charlite.export.exporter import _clean_up_after_killed_exports

    dead = subprocess.Popen(["true"])
    dead.wait()
    exports = tmp_path / "exports"
    exports.mkdir()
    stale = exports / f".r1.tmp-{dead.pid}"
    stale.mkdir()
    (stale / "beethoven-Q4_K_M.gguf").write_bytes(b"\0" * 1000)  # a partial merged model
    running = exports / ".r1.tmp-1"  # pid 1 is alive: another export in progress
    running.mkdir()
    moved = exports / f".r2.old-{dead.pid}"  # killed between moving the old export and renaming
    moved.mkdir()
    (moved / "manifest.json").write_text("{}")
    other = exports / "r3"
    other.mkdir()
    _clean_up_after_killed_exports(exports / "r1")
    _clean_up_after_killed_exports(exports / "r2")
    assert sorted(p.name for p in exports.iterdir()) == [".r1.tmp-1", "r2", "r3"]
    assert (exports / "r2" / "manifest.json").read_text() == "{}"

"""Issue 16, hostile input: the probe's exact reproductions, each refused with one ``error:``
line (or done as the user meant), no traceback, no hang, nothing lost.

Special files (FIFOs, ``/dev/zero``), unreadable files and concurrent adds run as real
processes, so a hang or a crash shows as such instead of taking pytest down with it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    CHARLITE,
    FIXTURES,
    assert_not_damaged,
    assert_one_error,
    fingerprint,
    invoke,
    run_cli,
    seed_home,
)

MiB = 1024 * 1024


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _dead_pid() -> int:
    """The PID of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _import_beethoven(home: Path) -> None:
    out = invoke(
        "data", "import", "beethoven", str(FIXTURES / "character_llm" / "experiences.json"),
        env={"CHARLITE_HOME": str(home)},
    )  # fmt: skip
    assert out.returncode == 0, out.output


# -------------------------------------------------------------------------------------------
# Tracebacks


def test_binary_yaml_is_refused_and_leaves_no_folder(tmp_path, charlite_home):
    path = _write(
        tmp_path / "binary.md",
        "---\nname: Ada\nmetadata:\n  blob: !!binary /+7/AA==\n---\n\nText.\n",
    )
    out = invoke("add", str(path))
    assert_one_error(out, "binary.md", "binary")
    assert not (charlite_home / "characters" / "ada").exists()


def test_5000_digit_knowledge_cutoff_is_refused(tmp_path, charlite_home):
    path = _write(
        tmp_path / "bigint.md", f"---\nname: Ada\nknowledge_cutoff: {'9' * 5000}\n---\n\nText.\n"
    )
    out = invoke("add", str(path))
    assert_one_error(out, "bigint.md", "digits")
    assert not (charlite_home / "characters").exists()


@pytest.mark.parametrize("name", ["bigint.json", "bigint.jsonl"])
def test_5000_digit_number_in_a_card_or_import_is_refused(tmp_path, charlite_home, name):
    number = "9" * 5000
    if name.endswith(".json"):  # a card
        path = _write(tmp_path / name, f'{{"name": "Ada", "description": "x", "n": {number}}}')
        out = invoke("add", str(path))
        assert_one_error(out, name, "digits")
    else:  # a data import: the bad line is skipped and named
        path = _write(tmp_path / name, f'{{"conversations": {number}}}\n')
        out = invoke("data", "import", "beethoven", str(path))
        assert "Traceback" not in out.output
        assert "digits" in out.stderr


def _limited_as(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


@pytest.mark.parametrize(
    "args", [("add", "z.md"), ("add", "z.json"), ("data", "import", "beethoven", "z.jsonl")]
)
def test_symlink_to_dev_zero_is_refused(tmp_path, charlite_home, args):
    """``ln -s /dev/zero z.md; prlimit --as=3000000000 charlite add z.md``: its size reads as 0,
    so the size check passed and the read ran until memory ran out."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    (tmp_path / args[-1]).symlink_to("/dev/zero")
    env = {**os.environ, "CHARLITE_HOME": str(charlite_home)}
    proc = subprocess.run(
        [str(CHARLITE), *args[:-1], str(tmp_path / args[-1])],
        env=env,
        capture_output=True,
        timeout=120,
        preexec_fn=_limited_as(3_000_000_000),
    )
    out = _outcome(proc)
    assert_one_error(out, args[-1], "device")


def _outcome(proc: subprocess.CompletedProcess):
    from helpers import Outcome

    return Outcome(
        proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


# -------------------------------------------------------------------------------------------
# Hangs: a FIFO is refused before it is opened


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("p.md", ("add", "{}")),
        ("p.json", ("add", "{}")),
        ("p.jsonl", ("data", "import", "beethoven", "{}")),
        ("p.gguf", ("chat", "beethoven", "-m", "hi", "--model", "gguf:{}")),
        ("p.png", ("card", "beethoven", "-o", "{out}", "--image", "{}")),
    ],
)
def test_fifo_is_refused_without_hanging(tmp_path, charlite_home, name, args):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    argv = [a.format(fifo, out=tmp_path / "card.png") for a in args]
    started = time.monotonic()
    try:
        out = run_cli(*argv, home=charlite_home, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"charlite {' '.join(args[:2])} hung on a FIFO")
    assert_one_error(out, name, "FIFO")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "card.png").exists()


# -------------------------------------------------------------------------------------------
# Concurrency: two adds of one name at once


def _slow_profile(name: str, text: str, values: int = 8_000) -> str:
    """A profile whose writing takes a while (a big metadata tree goes through PyYAML's dumper),
    so two adds started together both pass the "already exists" check before either writes."""
    meta = "".join(f"  k{i}: {i}\n" for i in range(values))
    return f"---\nname: {name}\nmetadata:\n{meta}---\n\n{text}\n"


@pytest.mark.slow
def test_two_adds_of_one_name_at_once(tmp_path, charlite_home):
    files = [
        _write(tmp_path / "a1.md", _slow_profile("Twin", "First.")),
        _write(tmp_path / "b1.md", _slow_profile("Twin", "Second.")),
    ]
    env = {**os.environ, "CHARLITE_HOME": str(charlite_home)}
    procs = [
        subprocess.Popen(
            [str(CHARLITE), "add", str(f)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for f in files
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        outs.append(_outcome(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)))
    won = [i for i, o in enumerate(outs) if o.returncode == 0]
    assert len(won) == 1, [o.output[-500:] for o in outs]
    lost = outs[1 - won[0]]
    assert_one_error(lost, "already exists")
    kept = (charlite_home / "characters" / "twin" / "profile.md").read_text(encoding="utf-8")
    assert ("First." if won[0] == 0 else "Second.") in kept
    assert [p.name for p in (charlite_home / "characters" / "twin").iterdir()] == ["profile.md"]


# -------------------------------------------------------------------------------------------
# Names ending in a newline


def test_slug_with_final_newline_is_refused(tmp_path, charlite_home):
    path = _write(tmp_path / "a.md", '---\nname: Ada\nslug: "ada\\n"\n---\n\nText.\n')
    out = invoke("add", str(path))
    assert_one_error(out, "slug")
    assert not (charlite_home / "characters").exists()


def test_name_option_with_final_newline_is_refused(tmp_path, charlite_home):
    path = _write(tmp_path / "e.md", "---\nname: Eve\n---\n\nText.\n")
    out = invoke("add", str(path), "--name", "beethoven\n")
    assert_one_error(out)
    assert not (charlite_home / "characters").exists()
    listed = invoke("characters").stdout
    assert listed.count("beethoven") == 1


def test_dataset_with_final_newline_is_refused(charlite_home):
    out = invoke(
        "data", "import", "beethoven", str(FIXTURES / "character_llm" / "experiences.json"),
        "--dataset", "d\n",
    )  # fmt: skip
    assert_one_error(out, "dataset name")
    assert not (charlite_home / "characters").exists()


def test_the_shared_name_check_matches_whole_names():
    from charlite.errors import CharliteError
    from charlite.home import check_name

    for bad in ("ada\n", "ada\r", "\nada", "a\nb", "ada\n\n"):
        with pytest.raises(CharliteError):
            check_name(bad)
    assert check_name("ada") == "ada"


# -------------------------------------------------------------------------------------------
# Limits on what is written, not only on what is read


ALIASES_SCRIPT = """
s = "x" * 20000
t = "---\\nname: Ada\\nera: x\\nknowledge_cutoff: 1\\nmetadata:\\n  a: &a [" + ", ".join([f"'{s}'"] * 5) + "]\\n"
for p, n in zip("abcd", "bcde"):
    t += f"  {n}: &{n} [" + ", ".join([f"*{p}"] * 5) + "]\\n"
open("aliases.md", "w").write(t + "---\\n\\nText.\\n")
"""


def test_alias_tree_of_62_mb_is_refused_before_writing(tmp_path, charlite_home):
    subprocess.run([sys.executable, "-c", ALIASES_SCRIPT], cwd=tmp_path, check=True)
    assert (tmp_path / "aliases.md").stat().st_size < 200_000
    started = time.monotonic()
    out = invoke("add", str(tmp_path / "aliases.md"))
    assert_one_error(out, "aliases.md", "MiB")
    assert time.monotonic() - started < 30
    assert not (charlite_home / "characters").exists()


def test_card_that_would_write_an_unreadable_profile_is_refused(tmp_path, charlite_home):
    """A 15 MiB description fits the card limit but made a 32 MB profile over the 5 MiB limit
    for reading one, locking the user out of their own character."""
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Big", "description": "word " * (15 * MiB // 5)},
    }
    path = _write(tmp_path / "big.json", json.dumps(card))
    out = invoke("add", str(path))
    assert_one_error(out, "big.json", "MiB")
    assert not (charlite_home / "characters" / "big").exists()


def test_a_profile_at_the_limit_still_reads_back(tmp_path, charlite_home):
    body = "\n\n".join("A sentence of the story. " * 40 for _ in range(4000))  # ~4 MB
    path = _write(
        tmp_path / "long.md", f"---\nname: Long\nera: x\nknowledge_cutoff: 1\n---\n\n{body}\n"
    )
    assert invoke("add", str(path)).returncode == 0
    out = invoke("show", "long")
    assert out.returncode == 0, out.output


# -------------------------------------------------------------------------------------------
# -o: refuse an existing file without --force; write special files as the user meant


def test_data_export_does_not_overwrite_without_force(tmp_path, charlite_home):
    _import_beethoven(charlite_home)
    keep = _write(tmp_path / "keep.json", "precious\n")
    out = invoke("data", "export", "beethoven", "--format", "messages", "-o", str(keep))
    assert_one_error(out, "keep.json", "already exists", "--force")
    assert keep.read_text() == "precious\n"
    out = invoke("data", "export", "beethoven", "--format", "messages", "-o", str(keep), "--force")
    assert out.returncode == 0, out.output
    assert isinstance(json.loads(keep.read_text()), list)


def test_modelfile_does_not_overwrite_without_force(tmp_path, charlite_home):
    keep = _write(tmp_path / "Modelfile", "precious\n")
    out = invoke("modelfile", "beethoven", "-o", str(keep), "--from", "smollm2:135m")
    assert_one_error(out, "already exists", "--force")
    assert keep.read_text() == "precious\n"
    assert (
        invoke(
            "modelfile", "beethoven", "-o", str(keep), "--force", "--from", "smollm2:135m"
        ).returncode
        == 0
    )
    assert keep.read_text().startswith("#")


def test_force_through_a_link_to_a_file_keeps_the_link(tmp_path, charlite_home):
    target = _write(tmp_path / "real.Modelfile", "old\n")
    link = tmp_path / "link.Modelfile"
    link.symlink_to(target)
    assert_one_error(
        invoke("modelfile", "beethoven", "-o", str(link), "--from", "smollm2:135m"),
        "already exists",
    )
    assert (
        invoke(
            "modelfile", "beethoven", "-o", str(link), "--force", "--from", "smollm2:135m"
        ).returncode
        == 0
    )
    assert link.is_symlink() and "FROM" in target.read_text()


@pytest.mark.parametrize(
    "args",
    [
        ("modelfile", "beethoven", "--from", "smollm2:135m"),
        ("card", "beethoven"),
        ("data", "export", "beethoven", "--format", "messages"),
    ],
)
def test_o_to_a_link_to_dev_stdout_writes_to_stdout(tmp_path, charlite_home, args):
    """``ln -s /dev/stdout out.Modelfile; charlite modelfile beethoven -o out.Modelfile``
    replaced the link and printed nothing."""
    if args[0] == "data":
        _import_beethoven(charlite_home)
    link = tmp_path / ("out.json" if args[0] != "modelfile" else "out.Modelfile")
    link.symlink_to("/dev/stdout")
    out = run_cli(*args, "-o", str(link), home=charlite_home, timeout=120)
    assert out.returncode == 0, out.output
    assert link.is_symlink() and os.readlink(link) == "/dev/stdout"
    expected = "FROM" if args[0] == "modelfile" else '"'
    assert expected in out.stdout


def test_o_to_a_device_node_writes_into_it(tmp_path, charlite_home):
    """A ``/dev/null``-like node given to -o stays a device (it was replaced by a file)."""
    _import_beethoven(charlite_home)
    cases = [
        ("null", ("modelfile", "beethoven", "--from", "smollm2:135m")),
        ("null.json", ("card", "beethoven")),
        ("null.jsonl", ("data", "export", "beethoven", "--format", "messages")),
    ]
    for name, args in cases:
        node = tmp_path / name
        try:
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            pytest.skip("cannot create a device node here")
        out = invoke(*args, "-o", str(node))
        assert out.returncode == 0, out.output
        assert stat.S_ISCHR(node.lstat().st_mode), name


# -------------------------------------------------------------------------------------------
# An unreadable profile: one error line and exit 1, not click's usage block and exit 2

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _without_root_read_powers() -> None:
    """In the child before exec: drop the capabilities that let root read any file, so a
    chmod 000 file is unreadable even for root (the tests run as root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")


@pytest.mark.parametrize("name", ["secret.md", "secret.json"])
def test_unreadable_profile_is_one_error_line(tmp_path, charlite_home, name):
    secret = _write(tmp_path / name, "---\nname: Ada\n---\n\nText.\n")
    secret.chmod(0)
    env = {**os.environ, "CHARLITE_HOME": str(charlite_home)}
    try:
        proc = subprocess.run(
            [str(CHARLITE), "add", str(secret)],
            env=env,
            capture_output=True,
            timeout=120,
            preexec_fn=_without_root_read_powers if os.geteuid() == 0 else None,
        )
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop root's read capabilities here: {exc}")
    out = _outcome(proc)
    assert out.returncode == 1, out.output
    assert_one_error(out, name, "Permission denied")
    assert "Usage:" not in out.output


# -------------------------------------------------------------------------------------------
# Temp files left by a killed writer are removed by the next run


def test_stale_temp_of_a_killed_add_is_removed(tmp_path, charlite_home):
    folder = charlite_home / "characters" / "ada"
    folder.mkdir(parents=True)
    stale = folder / f".profile.md.tmp-{_dead_pid()}"
    stale.write_text("half a profi")
    live = folder / f".profile.md.tmp-{os.getppid()}"  # a writer still at work keeps its file
    live.write_text("being written")
    path = _write(
        tmp_path / "ada.md", "---\nname: Ada\nera: x\nknowledge_cutoff: 1\n---\n\nText.\n"
    )
    out = invoke("add", str(path))
    assert out.returncode == 0, out.output
    assert not stale.exists()
    assert live.exists()
    assert (folder / "profile.md").is_file()


def test_stale_temp_of_another_character_is_removed_by_the_next_add(tmp_path, charlite_home):
    folder = charlite_home / "characters" / "bob"
    folder.mkdir(parents=True)
    stale = folder / f".profile.md.tmp-{_dead_pid()}"
    stale.write_text("half")
    path = _write(
        tmp_path / "ada.md", "---\nname: Ada\nera: x\nknowledge_cutoff: 1\n---\n\nText.\n"
    )
    assert invoke("add", str(path)).returncode == 0
    assert not stale.exists()


def test_stale_temp_of_a_killed_card_is_removed(tmp_path, charlite_home):
    stale = tmp_path / f".ada.png.tmp-{_dead_pid()}"
    stale.write_bytes(b"\x89PNG half")
    other = tmp_path / f".other.png.tmp-{_dead_pid()}"  # not this output's: left alone
    other.write_bytes(b"not ours")
    out = invoke("card", "beethoven", "-o", str(tmp_path / "ada.png"))
    assert out.returncode == 0, out.output
    assert not stale.exists()
    assert other.exists()
    assert (tmp_path / "ada.png").read_bytes().startswith(b"\x89PNG")


# -------------------------------------------------------------------------------------------
# A full disk asks for space, not for moving the history aside


def test_database_full_asks_to_free_space(tmp_path):
    """SQLite's own "database or disk is full" (here from max_page_count, a real SQLITE_FULL)."""
    from charlite.errors import StorageError
    from charlite.history import History

    history = History(tmp_path / "history.sqlite")
    sid = history.new_session("beethoven", "embedded")
    pages = history.db.execute("PRAGMA page_count").fetchone()[0]
    history.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StorageError) as caught:
        history.add_turn(sid, "user", "", "x" * 100_000)
    assert "disk is full" in str(caught.value) and "free space" in str(caught.value)
    assert "move the file aside" not in str(caught.value)
    history.close()


FULL_DISK = r"""
set -e
mount -t tmpfs -o size=256k tmpfs "$HOME_DIR"
"$PY" -c 'import sys; from charlite.history import History; h = History(sys.argv[1] + "/history.sqlite"); h.new_session("beethoven", "embedded"); h.close()' "$HOME_DIR"
dd if=/dev/zero of="$HOME_DIR/fill" bs=4k 2>/dev/null || true
set +e
"$CHARLITE" chat beethoven -m hi --max-tokens 4
echo "rc=$?"
"""


def test_full_disk_asks_to_free_space(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a small file system")
    home = tmp_path / "small"
    home.mkdir()
    env = {
        **os.environ,
        "HOME_DIR": str(home),
        "PY": sys.executable,
        "CHARLITE": str(CHARLITE),
        "CHARLITE_HOME": str(home),
    }
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", FULL_DISK], env=env, capture_output=True, timeout=300
    )
    err = proc.stderr.decode(errors="replace")
    if "mount:" in err or "unshare:" in err:
        pytest.skip(f"cannot mount a small file system here: {err.strip()[:200]}")
    out = proc.stdout.decode(errors="replace")
    assert "rc=1" in out, out + err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "free space" in lines[0], lines[0]
    assert "move the file aside" not in lines[0]
    assert "Traceback" not in err


def test_seeded_home_survives_every_refusal_here(tmp_path, charlite_home):
    """The refusals above change nothing that was there."""
    before = seed_home(charlite_home)
    for content in (
        "---\nname: Ada\nmetadata:\n  blob: !!binary /+7/AA==\n---\n\nText.\n",
        f"---\nname: Ada\nknowledge_cutoff: {'9' * 5000}\n---\n\nText.\n",
        '---\nname: Ada\nslug: "ada\\n"\n---\n\nText.\n',
    ):
        path = _write(tmp_path / "bad.md", content)
        assert_one_error(invoke("add", str(path)))
    assert_one_error(
        invoke(
            "add", str(_write(tmp_path / "e.md", "---\nname: Eve\n---\n\nT.\n")), "--name", "ada\n"
        )
    )
    assert_not_damaged(before, fingerprint(charlite_home))

"""Bad input through the real CLI: one ``error:`` line, a non-zero exit, no traceback, and
nothing in CHARLITE_HOME changed.

Each case runs ``charlite ...`` (in this process through CliRunner with exceptions not caught,
or as a real process where a native library could abort it) against a home that already holds
a user profile, an imported dataset and a chat session, and compares the home's fingerprint
before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import (
    FIXTURES,
    assert_not_damaged,
    assert_one_error,
    corrupt_ggufs,
    fingerprint,
    invoke,
    run_cli,
    seed_home,
    write_tiny_gguf,
)

MiB = 1024 * 1024
GOOD_BODY = "\n\nShe wrote the first program.\n"


@pytest.fixture
def seeded(charlite_home):
    return seed_home(charlite_home)


def _check(out, home: Path, before: dict, *expected: str) -> str:
    line = assert_one_error(out, *expected)
    assert_not_damaged(before, fingerprint(home))
    return line


# -------------------------------------------------------------------------------------------
# Profiles given to `charlite add`


def _laughs() -> str:
    text = "---\nname: Lol\nmetadata:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    prev = "a"
    for name in "bcdefghi":
        text += f"  {name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
        prev = name
    return text + "---\n\nText.\n"


def _front(yaml_text: str) -> str:
    return f"---\n{yaml_text}\n---{GOOD_BODY}"


PROFILE_FILES: list[tuple[str, str, bytes | str, tuple[str, ...]]] = [
    # (id, file name, content, expected parts of the error line)
    ("empty", "empty.md", b"", ("empty.md",)),
    ("blank", "blank.md", "\n \n\t\n", ("blank.md",)),
    ("nul-bytes", "nul.md", b"\x00" * 64, ("nul.md",)),
    ("front-matter-unterminated", "open.md", "---\nname: Ada\n\nText.\n", ("never ends",)),
    ("front-matter-bad-yaml", "yaml.md", "---\nname: [Ada\n---\n\nText.\n", ("not valid YAML",)),
    ("front-matter-list", "list.md", "---\n- a\n- b\n---\n\nText.\n", ("must be a mapping",)),
    ("front-matter-scalar", "scalar.md", "---\njust text\n---\n\nText.\n", ("must be a mapping",)),
    ("front-matter-only", "nobody.md", "---\nname: Ada\n---\n", ("no paragraphs",)),
    (
        "python-tag",
        "tag.md",
        _front('name: !!python/object/apply:os.system ["touch pwned"]'),
        ("not valid YAML",),
    ),  # fmt: skip
    ("lone-surrogate", "sur.md", _front('name: "A\\ud800"'), ("sur.md",)),
    ("latin-1", "latin1.md", "---\nname: José\n---\n\nCafé.\n".encode("latin-1"), ("not UTF-8",)),
    ("utf-16", "utf16.md", _front("name: Ada").encode("utf-16"), ("not UTF-8",)),
    ("random-bytes", "random.md", os.urandom(4096) + b"\xff", ("random.md",)),
    ("billion-laughs", "laughs.md", _laughs(), ("more than 500000 values",)),
    (
        "deep-nesting",
        "deep.md",
        _front("name: Deep\nmetadata: " + "[" * 300 + "]" * 300),
        ("nested more than 128 levels",),
    ),  # fmt: skip
    ("wiki-empty", "wiki_Nobody.txt", "# Nobody\n\n", ("no paragraphs",)),
    ("wiki-latin-1", "wiki_Jose.txt", "# José\n\nCafé.\n".encode("latin-1"), ("not UTF-8",)),
    ("unknown-extension", "ada.docx", "Ada", ("unknown profile format",)),
]

WRONG_TYPES: list[tuple[str, str, str]] = [
    # (id, front matter, the field the error names)
    ("name-number", "name: 42", "name"),
    ("name-list", "name: [Ada, Lovelace]", "name"),
    ("name-mapping", "name: {first: Ada}", "name"),
    ("name-empty", 'name: ""', "name"),
    ("name-too-long", "name: " + "A" * 300, "name"),
    ("name-null", "name: null", "name"),
    ("slug-dotdot", 'name: Ada\nslug: "../evil"', "slug"),
    ("slug-slash", 'name: Ada\nslug: "a/b"', "slug"),
    ("slug-upper", "name: Ada\nslug: ADA", "slug"),
    ("slug-number", "name: Ada\nslug: 5", "slug"),
    ("cutoff-text", "name: Ada\nknowledge_cutoff: yesterday", "knowledge_cutoff"),
    ("cutoff-float", "name: Ada\nknowledge_cutoff: 1852.5", "knowledge_cutoff"),
    ("cutoff-nan", "name: Ada\nknowledge_cutoff: .nan", "knowledge_cutoff"),
    ("cutoff-list", "name: Ada\nknowledge_cutoff: [1852]", "knowledge_cutoff"),
    ("era-list", "name: Ada\nera: [1815, 1852]", "era"),
    ("era-date", "name: Ada\nera: 1815-12-10", "era"),
    ("traits-text", "name: Ada\ntraits: curious", "traits"),
    ("traits-mapping", "name: Ada\ntraits: {a: 1}", "traits"),
    ("facts-text", "name: Ada\nfacts: many", "facts"),
    ("facts-missing-keywords", "name: Ada\nfacts: [{question: Who?}]", "facts.0"),
    (
        "facts-empty-keywords",
        "name: Ada\nfacts: [{question: Who?, answer_keywords: []}]",
        "facts.0",
    ),
    ("scene-text", "name: Ada\nscene: a room", "scene"),
    ("scene-no-status", "name: Ada\nscene: {location: London}", "scene"),
    ("scene-extra", "name: Ada\nscene: {location: L, status: S, mood: M}", "scene"),
    ("metadata-list", "name: Ada\nmetadata: [1, 2]", "metadata"),
    ("license-mapping", "name: Ada\nlicense: {a: 1}", "license"),
    ("dialogue-mapping", "name: Ada\nexample_dialogue: {a: 1}", "example_dialogue"),
    ("home-number", "name: Ada\nhome: 5", "home"),
    ("style-mapping", "name: Ada\nspeaking_style: {a: 1}", "speaking_style"),
    ("short-name-list", "name: Ada\nshort_name: [A]", "short_name"),
    ("unknown-field", "name: Ada\nfavourite_colour: blue", "favourite_colour"),
]


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [pytest.param(f, c, e, id=i) for i, f, c, e in PROFILE_FILES],
)
def test_add_malformed_profile(tmp_path, charlite_home, seeded, filename, content, expected):
    path = tmp_path / filename
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    out = invoke("add", str(path))
    _check(out, charlite_home, seeded, *expected)
    assert not (Path.cwd() / "pwned").exists()


@pytest.mark.parametrize(("front", "field"), [pytest.param(f, d, id=i) for i, f, d in WRONG_TYPES])
def test_add_front_matter_of_wrong_types(tmp_path, charlite_home, seeded, front, field):
    path = tmp_path / "wrong.md"
    path.write_text(_front(front), encoding="utf-8")
    out = invoke("add", str(path))
    _check(out, charlite_home, seeded, "wrong.md", f"'{field}")


def test_add_fifty_megabyte_profile(tmp_path, charlite_home, seeded):
    path = tmp_path / "huge.md"
    with open(path, "wb") as fh:
        fh.write(b"---\nname: Huge\n---\n\n")
        block = b"All work and no play makes Jack a dull boy. " * 1000 + b"\n\n"
        while fh.tell() < 50 * MiB:
            fh.write(block)
    out = run_cli("add", str(path))  # a real process: the file must not be read whole
    _check(out, charlite_home, seeded, "huge.md", "over the 5 MiB limit")


@pytest.mark.parametrize(
    "target",
    ["missing.md", "folder.md"],
)
def test_add_missing_file_or_folder(tmp_path, charlite_home, seeded, target):
    (tmp_path / "folder.md").mkdir()
    out = invoke("add", str(tmp_path / target))
    _check(out, charlite_home, seeded, target)


@pytest.mark.parametrize("slug", ["../evil", "a/b", "..", "/abs", "UPPER CASE", "-dash", "a\\b"])
def test_add_with_a_bad_name(tmp_path, charlite_home, seeded, slug):
    path = tmp_path / "good.md"
    path.write_text(_front("name: Good Person"), encoding="utf-8")
    out = invoke("add", str(path), "--name", slug)
    _check(out, charlite_home, seeded, "slug")
    assert not (tmp_path / "evil").exists() and not (charlite_home / "evil").exists()


def test_add_over_a_bundled_or_existing_character(tmp_path, charlite_home, seeded):
    path = tmp_path / "b.md"
    path.write_text(_front("name: Ludwig van Beethoven\nslug: beethoven"), encoding="utf-8")
    _check(invoke("add", str(path)), charlite_home, seeded, "already exists")
    path.write_text(_front("name: Ada Lovelace\nslug: ada"), encoding="utf-8")
    _check(invoke("add", str(path)), charlite_home, seeded, "already exists")


# -------------------------------------------------------------------------------------------
# A broken profile already in CHARLITE_HOME: every command that reads it says so in one line

BROKEN_INSTALLED = {
    "bad-yaml": "---\nname: [Ada\n---\n\nText.\n",
    "latin-1": "---\nname: José\n---\n\nCafé.\n".encode("latin-1"),
    "laughs": _laughs(),
    "wrong-type": _front("name: Ada\nknowledge_cutoff: yesterday"),
}

COMMANDS_READING_A_PROFILE = [
    ("show", "X"),
    ("chat", "X", "-m", "hello"),
    ("modelfile", "X"),
    ("card", "X", "-o", "{tmp}/x.json"),
    ("generate", "X", "--quiet"),
    ("data", "stats", "X"),
    ("data", "export", "X", "--format", "sharegpt"),
    ("data", "import", "X", str(FIXTURES / "character_llm" / "experiences.json")),
    ("train", "X", "--max-steps", "1"),
    ("export", "X"),
    ("interview", "X", "--limit", "1"),
]


@pytest.mark.parametrize("kind", list(BROKEN_INSTALLED))
def test_commands_on_a_broken_installed_profile(tmp_path, charlite_home, seeded, kind):
    content = BROKEN_INSTALLED[kind]
    folder = charlite_home / "characters" / "broken"
    folder.mkdir(parents=True)
    (folder / "profile.md").write_bytes(content if isinstance(content, bytes) else content.encode())
    before = fingerprint(charlite_home)
    for command in COMMANDS_READING_A_PROFILE:
        args = [a.replace("X", "broken").replace("{tmp}", str(tmp_path)) for a in command]
        out = invoke(*args)
        line = _check(out, charlite_home, before, "profile.md")
        assert "broken" in line, (args, line)
    # the list of characters still works and names the broken one as a warning
    out = invoke("characters")
    assert out.returncode == 0, out.output
    assert "ada" in out.stdout and "beethoven" in out.stdout
    assert any(ln.startswith("warning:") and "broken" in ln for ln in out.stderr.splitlines())


# -------------------------------------------------------------------------------------------
# Names with path separators or `..` wherever a character, dataset, run or session is named

EVIL = ["../../etc", "a/b", "..", "../ada", "/tmp/x", "ada/../beethoven"]

NAMED_ARGS = [
    ("show", "{}"),
    ("chat", "{}", "-m", "hi"),
    ("modelfile", "{}"),
    ("card", "{}", "-o", "{tmp}/card.json"),
    ("generate", "{}", "--quiet"),
    ("generate", "beethoven", "--dataset", "{}", "--quiet"),
    ("data", "stats", "{}"),
    ("data", "stats", "beethoven", "--dataset", "{}"),
    ("data", "export", "beethoven", "--format", "sharegpt", "--dataset", "{}"),
    ("data", "import", "beethoven", "{fixture}", "--dataset", "{}"),
    ("data", "import", "{}", "{fixture}"),
    ("train", "{}", "--max-steps", "1"),
    ("train", "beethoven", "--dataset", "{}", "--max-steps", "1"),
    ("train", "beethoven", "--run", "{}", "--max-steps", "1"),
    ("train", "beethoven", "--resume", "{}"),
    ("export", "{}"),
    ("export", "beethoven", "--run", "{}"),
    ("interview", "{}", "--limit", "1"),
]


@pytest.mark.parametrize("command", NAMED_ARGS, ids=lambda c: " ".join(c).replace("{}", "NAME"))
def test_path_names_are_refused(tmp_path, charlite_home, seeded, command):
    fixture = str(FIXTURES / "character_llm" / "experiences.json")
    outside = fingerprint(tmp_path)
    for evil in EVIL:
        args = [
            a.replace("{}", evil).replace("{tmp}", str(tmp_path)).replace("{fixture}", fixture)
            for a in command
        ]
        out = invoke(*args)
        _check(out, charlite_home, seeded)
    after = fingerprint(tmp_path)
    new = [p for p in after if p not in outside and not p.startswith("charlite-home")]
    assert not new, f"files written outside CHARLITE_HOME: {new}"


def test_session_ids_that_are_not_sessions(charlite_home, seeded):
    """--session is a checked name, never used as a path or spliced into SQL."""
    for sid in ["../../history", "'; DROP TABLE turns; --", "a/b", "x" * 5000, "a\n", ""]:
        out = invoke("chat", "beethoven", "--session", sid, "-m", "hi")
        _check(out, charlite_home, seeded, "invalid session name")


# -------------------------------------------------------------------------------------------
# Corrupt GGUF files: refused before llama.cpp opens them, and the process never aborts


@pytest.fixture(scope="module")
def bad_ggufs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    tiny = write_tiny_gguf(folder / "tiny.gguf")
    return corrupt_ggufs(tiny, folder / "bad")


REFUSED_BY_CHARLITE = [
    "truncated-half",
    "truncated-header",
    "random-bytes",
    "magic-then-random",
    "empty",
    "dims-wrap-to-zero",
    "dims-wrap-small",
    "dims-huge",
    "n-dims-9",
    "type-unknown",
    "offset-past-end",
    "offset-huge",
    "tensor-count-huge",
    "kv-count-huge",
    "version-99",
]


@pytest.mark.parametrize("kind", REFUSED_BY_CHARLITE)
def test_corrupt_gguf_is_refused_before_llama_cpp(bad_ggufs, charlite_home, seeded, kind):
    path = bad_ggufs[kind]
    out = run_cli("chat", "beethoven", "-m", "hi", "--model", f"gguf:{path}")
    _check(out, charlite_home, seeded, str(path), "not a valid GGUF file")


@pytest.mark.parametrize("kind", ["dims-zero", "offset-unaligned"])
def test_gguf_that_llama_cpp_refuses_does_not_abort(bad_ggufs, charlite_home, seeded, kind):
    """Header lies the reader tolerates: llama.cpp refuses them, the process exits with 1."""
    out = run_cli("chat", "beethoven", "-m", "hi", "--model", f"gguf:{bad_ggufs[kind]}")
    _check(out, charlite_home, seeded, str(bad_ggufs[kind]))


@pytest.mark.parametrize("kind", ["truncated-half", "dims-wrap-small", "offset-huge"])
def test_corrupt_gguf_as_teacher(bad_ggufs, charlite_home, seeded, kind):
    out = run_cli("generate", "beethoven", "--quiet", "--teacher", f"gguf:{bad_ggufs[kind]}")
    _check(out, charlite_home, seeded, "not a valid GGUF file")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dims-wrap-small", "dims-swapped", "offset-huge", "dims-zero"])
def test_real_model_with_impossible_tensor_sizes(tmp_path, embedded_path, charlite_home, kind):
    """The embedded model with one tensor entry patched: a clear error, never an abort."""
    from helpers import patched, tensor_table, u64

    first = tensor_table(embedded_path)[0]
    patch = {
        "dims-wrap-small": (first.dims_at, u64((1 << 63) + 32) + u64(2)),
        "dims-swapped": (first.dims_at, u64(49152) + u64(576)),
        "offset-huge": (first.offset_at, u64((1 << 64) - 64)),
        "dims-zero": (first.dims_at, u64(0) + u64(0)),
    }[kind]
    bad = patched(embedded_path, tmp_path / f"{kind}.gguf", [patch])
    out = run_cli("chat", "beethoven", "-m", "hi", "--model", f"gguf:{bad}")
    assert_one_error(out, str(bad))


# -------------------------------------------------------------------------------------------
# An export whose adapter was made for another base


def _fake_export(home: Path, adapter: Path, base: Path) -> Path:
    folder = home / "characters" / "beethoven" / "exports" / "r1"
    folder.mkdir(parents=True)
    target = folder / "beethoven-lora.gguf"
    target.write_bytes(adapter.read_bytes())
    manifest = {
        "format": 1,
        "kind": "charlite-export",
        "run_id": "r1",
        "created": "2030-01-01T00:00:00+00:00",
        "smoke_ok": True,
        "lora": {"file": target.name},
        "base": {"gguf": str(base)},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize("kind", ["other-shapes", "other-arch", "truncated"])
def test_adapter_for_another_base(tmp_path, embedded_path, charlite_home, kind):
    from helpers_models import write_random_adapter

    if kind == "truncated":
        adapter = write_random_adapter(embedded_path, tmp_path / "a.gguf", seed=3)
        adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])
        expected = "not a valid GGUF file"
    else:
        other = write_tiny_gguf(
            tmp_path / "other.gguf", "llama" if kind == "other-shapes" else "gpt2"
        )
        adapter = _adapter_for(other, tmp_path / "a.gguf")
        expected = "does not fit" if kind == "other-shapes" else "is for a gpt2 model"
    _fake_export(charlite_home, adapter, embedded_path)
    before = fingerprint(charlite_home)
    out = run_cli("chat", "beethoven", "-m", "hi")
    _check(out, charlite_home, before, expected)


def _adapter_for(base: Path, out: Path) -> Path:
    """A LoRA adapter shaped for the tiny GGUF ``base`` (8x8 token_embd -> blk.0 names)."""
    import gguf
    import numpy as np

    from charlite.gguf import check_gguf

    writer = gguf.GGUFWriter(str(out), check_gguf(base).architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 4.0)
    for name in ("blk.0.attn_q.weight", "blk.0.attn_v.weight"):
        writer.add_tensor(f"{name}.lora_a", np.ones((4, 8), dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.ones((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


# -------------------------------------------------------------------------------------------
# Hostile cards the card suite (tests/test_cards_hostile.py) does not cover


def _card(**data) -> dict:
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "C", **data}}


CARDS: list[tuple[str, str, bytes | str, tuple[str, ...]]] = [
    ("empty-json", "empty.json", b"", ("empty.json",)),
    ("not-json", "text.json", "hello", ("text.json",)),
    ("json-null", "null.json", "null", ("null.json",)),
    ("bom-utf16", "u16.json", json.dumps(_card(description="x")).encode("utf-16"), ("u16.json",)),
    (
        "nested-objects",
        "deep.json",
        json.dumps(_card(description="x"))[:-2]
        + ', "extensions": '
        + '{"a": ' * 200
        + "1"
        + "}" * 200
        + "}}",
        ("nested",),
    ),  # fmt: skip
    ("name-path", "path.json", json.dumps(_card(name="../../x", description="x")), ("slug",)),
    ("empty-png", "empty.png", b"", ("empty.png",)),
]


@pytest.mark.parametrize(
    ("filename", "content", "expected"), [pytest.param(f, c, e, id=i) for i, f, c, e in CARDS]
)
def test_hostile_cards(tmp_path, charlite_home, seeded, filename, content, expected):
    path = tmp_path / filename
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    folders = set((charlite_home / "characters").iterdir())
    out = invoke("add", str(path))
    if filename == "path.json" and out.returncode == 0:
        # a card name is only a display name: its slug stays one folder inside CHARLITE_HOME
        (new,) = set((charlite_home / "characters").iterdir()) - folders
        assert new.name == "x" and (new / "profile.md").is_file(), new
        return
    _check(out, charlite_home, seeded, *expected)


def test_fifty_megabyte_card_json(tmp_path, charlite_home, seeded):
    path = tmp_path / "huge.json"
    with open(path, "w") as fh:
        fh.write('{"spec": "chara_card_v2", "data": {"name": "H", "description": "')
        fh.write("x" * (50 * MiB))
        fh.write('"}}')
    out = run_cli("add", str(path))
    _check(out, charlite_home, seeded, "over the 20 MiB limit")


# -------------------------------------------------------------------------------------------
# Import files with wrong field types (`charlite data import`)

IMPORTS: list[tuple[str, str, str]] = [
    ("top-level-number", "n.json", "42"),
    ("top-level-string", "s.json", '"text"'),
    ("list-of-numbers", "l.json", "[1, 2, 3]"),
    ("list-of-lists", "ll.json", "[[1], [2]]"),
    ("sharegpt-turns-not-list", "g.json", json.dumps([{"conversations": "hello"}])),
    (
        "sharegpt-value-number",
        "gv.json",
        json.dumps(
            [{"conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": 6}]}]
        ),
    ),
    (
        "messages-role-number",
        "m.jsonl",
        json.dumps(
            {"messages": [{"role": 1, "content": "x"}, {"role": "assistant", "content": 2}]}
        ),
    ),
    ("messages-null", "mn.jsonl", json.dumps({"messages": None})),
    ("character-llm-types", "c.json", json.dumps([{"setting": 5, "dialogue": {"a": 1}}])),
    ("scene-types", "sc.json", json.dumps([{"location": ["x"], "background": 7}])),
    ("prompted-types", "p.jsonl", json.dumps({"prompt": 1, "output": ["x"]})),
    ("deep-nesting", "d.json", "[" * 5000 + "]" * 5000),
    ("bad-json", "b.json", '[{"a": 1},'),
    ("jsonl-garbage", "g.jsonl", "not json\n{also not\n"),
    ("not-utf8", "u.jsonl", "\xff\xfe"),
]


@pytest.mark.parametrize(("filename", "content"), [pytest.param(f, c, id=i) for i, f, c in IMPORTS])
def test_import_files_with_wrong_types(tmp_path, charlite_home, seeded, filename, content):
    path = tmp_path / filename
    path.write_bytes(content.encode("latin-1") if filename == "u.jsonl" else content.encode())
    out = invoke("data", "import", "beethoven", str(path))
    _check(out, charlite_home, seeded, filename)


def test_import_into_a_new_dataset_leaves_no_folder(tmp_path, charlite_home, seeded):
    path = tmp_path / "bad.json"
    path.write_text("[1, 2]")
    out = invoke("data", "import", "beethoven", str(path), "--dataset", "fresh")
    _check(out, charlite_home, seeded, "bad.json")
    assert not (charlite_home / "characters" / "beethoven" / "data" / "fresh").exists()


# -------------------------------------------------------------------------------------------
# Damaged artifacts in CHARLITE_HOME (a hand-edited manifest, a stray file)

MANIFESTS = {
    "not-json": "{",
    "list": "[1]",
    "format-text": json.dumps({"format": "1", "kind": "charlite.dataset"}),
    "format-null": json.dumps({"format": None}),
    "format-future": json.dumps({"format": 999}),
}


@pytest.mark.parametrize("kind", list(MANIFESTS))
def test_damaged_dataset_manifest(charlite_home, seeded, kind):
    manifest = charlite_home / "characters" / "beethoven" / "data" / "default" / "manifest.json"
    manifest.write_text(MANIFESTS[kind])
    before = fingerprint(charlite_home)
    for args in (
        ("data", "stats", "beethoven"),
        ("data", "import", "beethoven", str(FIXTURES / "character_llm" / "scenes.json")),
        ("generate", "beethoven", "--quiet"),
    ):
        out = invoke(*args)
        _check(out, charlite_home, before, "manifest.json")


def test_history_database_that_is_not_a_database(charlite_home):
    (charlite_home).mkdir(parents=True, exist_ok=True)
    (charlite_home / "history.sqlite").write_bytes(b"this is not SQLite" * 100)
    before = fingerprint(charlite_home)
    out = run_cli("chat", "beethoven", "-m", "hi")
    _check(out, charlite_home, before, "history")


STORE_LINES = [
    {"id": ["not", "hashable"], "kind": "experience"},
    {"id": {"a": 1}},
    {"id": "x1", "turns": "not a list", "scene_id": 5},
    {"id": "x2", "dialogue": [{"role": 1, "action": None, "content": {"a": 1}}]},
    [1, 2, 3],
    "a string",
    None,
    12,
]


def test_hand_edited_store_with_wrong_types(charlite_home, seeded, tmp_path):
    """Records of the wrong shape in a JSONL store are skipped, never a traceback."""
    store = charlite_home / "characters" / "beethoven" / "data" / "default" / "experiences.jsonl"
    good = store.read_text()
    clean = tmp_path / "clean.jsonl"
    assert (
        invoke("data", "export", "beethoven", "--format", "sharegpt", "-o", str(clean)).returncode
        == 0
    )
    with open(store, "a") as fh:
        for line in STORE_LINES:
            fh.write(json.dumps(line) + "\n")
        fh.write("[" * 5000 + "]" * 5000 + "\n")  # too deep for json: skipped like garbage
    for args in (
        ("data", "stats", "beethoven"),
        ("data", "export", "beethoven", "--format", "sharegpt", "-o", str(tmp_path / "o.jsonl")),
        ("data", "import", "beethoven", str(FIXTURES / "character_llm" / "experiences.json")),
    ):
        out = invoke(*args)
        assert out.returncode == 0, (args, out.output)
    assert (tmp_path / "o.jsonl").read_text() == clean.read_text()  # the good records only
    assert store.read_text().startswith(good)  # nothing rewritten

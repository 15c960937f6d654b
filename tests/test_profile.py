"""Profiles: the bundled nine, validation errors, wiki import, Markdown round trip, `charlite add`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from charlite import characters
from charlite.characters import load_profile
from charlite.cli import cli
from charlite.errors import NotFoundError, ProfileError
from charlite.profile import (
    MAX_PROFILE_BYTES,
    Paragraph,
    Profile,
    dump_markdown,
    parse_markdown,
    split_paragraphs,
)

FIXTURES = Path(__file__).parent / "fixtures" / "profiles"
REPO = Path(__file__).resolve().parent.parent

PAPER_CHARACTERS = {
    "beethoven": "Ludwig van Beethoven",
    "cleopatra": "Cleopatra",
    "caesar": "Julius Caesar",
    "socrates": "Socrates",
    "spartacus": "Spartacus",
    "hermione": "Hermione",
    "voldemort": "Voldemort",
    "newton": "Isaac Newton",
    "mlk": "Martin Luther King",
}
FRONT_MATTER_FIELDS = (
    "name",
    "slug",
    "short_name",
    "era",
    "knowledge_cutoff",
    "home",
    "scene",
    "speaking_style",
    "traits",
    "facts",
)


def _front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path.name} has no front matter"
    return yaml.safe_load(text.split("\n---", 1)[0][4:])


def _invoke(*args: str, **kw):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)


# ---------------------------------------------------------------------------------------------
# Bundled profiles


def test_the_nine_paper_characters_are_bundled():
    refs = characters.character_refs()
    assert set(PAPER_CHARACTERS) <= set(refs)
    for slug in PAPER_CHARACTERS:
        assert refs[slug].bundled
        assert refs[slug].path.parent == characters.bundled_dir()


@pytest.mark.parametrize("slug", sorted(PAPER_CHARACTERS))
def test_bundled_profile_meets_the_issue(slug):
    path = characters.find(slug).path
    meta = _front_matter(path)
    missing = [f for f in FRONT_MATTER_FIELDS if f not in meta]
    assert not missing, f"{path.name} lacks {missing}"
    assert set(meta["scene"]) == {"location", "status"}

    p = characters.get_profile(slug)
    assert p.bundled and p.slug == slug == path.stem
    assert PAPER_CHARACTERS[slug] in p.name
    assert p.short_name and p.short_name.split()[-1] in p.name
    assert isinstance(p.knowledge_cutoff, int)
    assert p.era and p.era != "unknown" and p.home and p.speaking_style
    assert p.scene is not None and p.scene.location and p.scene.status
    assert len(p.traits) >= 3
    assert p.warnings == []

    # >= 10 recall probes whose answers the profile itself contains
    assert len(p.facts) >= 10
    body = " ".join(p.paragraph_texts()).lower()
    for fact in p.facts:
        assert len(fact.question.split()) >= 3, fact.question
        assert fact.answer_keywords and all(k.strip() for k in fact.answer_keywords)
        assert any(k.lower() in body for k in fact.answer_keywords), fact.question

    # >= 12 rich paragraphs
    assert len(p.paragraphs) >= 12
    assert all(len(t.split()) >= 40 for t in p.paragraph_texts())
    assert sum(len(t.split()) for t in p.paragraph_texts()) >= 1200


def test_knowledge_cutoffs_are_consistent_with_eras():
    for slug in PAPER_CHARACTERS:
        p = characters.get_profile(slug)
        bc = "BC" in p.era
        assert (p.knowledge_cutoff < 0) == bc, (slug, p.era, p.knowledge_cutoff)
        assert str(abs(p.knowledge_cutoff)) in p.era, (slug, p.era, p.knowledge_cutoff)


def test_bundled_dir_from_an_installed_layout(tmp_path):
    """From a wheel, profiles sit in charlite/_bundled/profiles (pyproject force-include)."""
    site = tmp_path / "site"
    shutil.copytree(
        REPO / "charlite", site / "charlite", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "profiles", site / "charlite" / "_bundled" / "profiles")
    code = (
        "from charlite import characters as c; print(c.bundled_dir());"
        "print(sorted(c.character_refs()))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    folder, slugs = out.stdout.strip().split("\n")
    assert Path(folder) == site / "charlite" / "_bundled" / "profiles"
    assert set(PAPER_CHARACTERS) <= set(eval(slugs))


# ---------------------------------------------------------------------------------------------
# Malformed profiles: ProfileError naming the file and the field


@pytest.mark.parametrize(
    "fixture, expected",
    [
        ("bad_yaml.md", "front matter is not valid YAML at line"),
        ("bad_types.md", "field 'knowledge_cutoff'"),
        ("bad_facts.md", "field 'facts.0.answer_keywords'"),
        ("bad_slug.md", "field 'slug'"),
        ("no_name.md", "field 'name' is missing"),
        ("no_paragraphs.md", "no paragraphs"),
        ("unterminated.md", "never ends"),
        ("latin1.md", "not UTF-8"),
    ],
)
def test_malformed_profile_names_file_and_field(fixture, expected):
    path = FIXTURES / fixture
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "front, field",
    [
        ("traits: 7", "traits"),
        ("facts: [{question: 'Where?'}]", "facts.0.answer_keywords"),
        ("facts: [{question: 'Where?', answer_keywords: []}]", "facts.0.answer_keywords"),
        ("facts: [{question: 'Where?', answer_keywords: [x], extra: 1}]", "facts.0.extra"),
        ("scene: {location: Rome}", "scene.status"),
        ("scene: 'Rome'", "scene"),
        ("name: ''", "name"),
        ("colour: blue", "colour"),
        ("knowledge_cutoff: [1800]", "knowledge_cutoff"),
    ],
)
def test_wrong_field_types(tmp_path, front, field):
    path = tmp_path / "typo.md"
    lines = ["name: Someone", "slug: someone"]
    key = front.split(":")[0]
    lines = [ln for ln in lines if not ln.startswith(key + ":")] + [front]
    path.write_text("---\n" + "\n".join(lines) + "\n---\n\nA paragraph.\n", encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(path) in str(info.value)
    assert f"field '{field}'" in str(info.value)


def test_front_matter_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.md"
    path.write_text("---\n- a\n- b\n---\n\nText.\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="must be a mapping"):
        load_profile(path)


def test_oversized_profile(tmp_path):
    path = tmp_path / "huge.md"
    para = "word " * 200 + "\n\n"
    path.write_text("---\nname: Huge\n---\n\n" + para * (MAX_PROFILE_BYTES // len(para) + 2))
    assert path.stat().st_size > MAX_PROFILE_BYTES
    with pytest.raises(ProfileError, match="MiB limit") as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_missing_file_folder_and_unknown_format(tmp_path):
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path / "nope.md")
    with pytest.raises(ProfileError, match="is a folder"):
        load_profile(tmp_path)
    odd = tmp_path / "x.docx"
    odd.write_text("hello")
    with pytest.raises(ProfileError, match="unknown profile format '.docx'"):
        load_profile(odd)


def test_name_from_title_line_and_defaults_with_warnings(tmp_path):
    path = tmp_path / "plain.md"
    path.write_text("# Hypatia of Alexandria\n\nA mathematician.\n\nA teacher.\n", encoding="utf-8")
    p = load_profile(path)
    assert p.name == "Hypatia of Alexandria" and p.slug == "hypatia-of-alexandria"
    assert p.short_name == "Alexandria"
    assert [x.text for x in p.paragraphs] == ["A mathematician.", "A teacher."]
    assert p.era == "unknown" and p.knowledge_cutoff is None
    assert any("era" in w for w in p.warnings) and any("knowledge_cutoff" in w for w in p.warnings)
    assert p.default_scene.location and p.short_name in p.default_scene.status


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "bom.md"
    text = "---\r\nname: Émilie du Châtelet\r\nslug: chatelet\r\n---\r\n\r\nOne.\r\n\r\nTwo.\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    p = load_profile(path)
    assert p.name == "Émilie du Châtelet" and len(p.paragraphs) == 2


# ---------------------------------------------------------------------------------------------
# Character-LLM wiki .txt


def test_wiki_txt_import_with_defaults_and_warning():
    p = load_profile(FIXTURES / "wiki_Ada_Lovelace.txt")
    assert p.name == "Augusta Ada King, Countess of Lovelace"
    assert p.slug == "lovelace" and p.short_name == "Lovelace"
    assert p.era == "unknown" and p.knowledge_cutoff is None and p.scene is None
    assert p.facts == [] and p.traits == []
    assert len(p.warnings) == 1 and "no era, knowledge cutoff or scene" in p.warnings[0]
    assert len(p.paragraphs) == 6
    # "## Biography" and the plain sub-heading lines of Wikipedia text become headings
    assert [x.heading for x in p.paragraphs] == [
        None,
        None,
        "Childhood",
        "1833–1842: Babbage",
        "Work",
        "Work",
    ]
    assert p.paragraphs[2].text.startswith("Her mother, fearing")
    assert "measles" in p.paragraphs[2].text  # lines of one paragraph are joined
    assert all("#" not in t for t in p.paragraph_texts())


def test_wiki_txt_without_title_line_takes_the_file_name(tmp_path):
    path = tmp_path / "wiki_Marie_Curie.txt"
    path.write_text("Marie Curie was a physicist.\n\nShe won two Nobel prizes.\n", encoding="utf-8")
    p = load_profile(path)
    assert p.name == "Marie Curie" and p.slug == "curie" and len(p.paragraphs) == 2


def test_wiki_txt_with_no_paragraphs(tmp_path):
    path = tmp_path / "wiki_Nobody.txt"
    path.write_text("# Nobody\n\n\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="no paragraphs"):
        load_profile(path)


# ---------------------------------------------------------------------------------------------
# dump_markdown -> parse_markdown


def _roundtrip(p: Profile) -> Profile:
    return parse_markdown(dump_markdown(p), Path("roundtrip.md"))


@pytest.mark.parametrize("slug", sorted(PAPER_CHARACTERS))
def test_dump_parse_roundtrip_bundled(slug):
    p = characters.get_profile(slug)
    back = _roundtrip(p)
    assert back.model_dump() == p.model_dump()
    assert back.digest() == p.digest()


@pytest.mark.parametrize("fixture", ["minimal.md", "wiki_Ada_Lovelace.txt"])
def test_dump_parse_roundtrip_fixtures(fixture):
    p = load_profile(FIXTURES / fixture)
    assert _roundtrip(p).model_dump() == p.model_dump()


def test_dump_parse_roundtrip_awkward_values():
    p = Profile(
        name='Ada: "the" Enchantress of Numbers',
        slug="ada",
        era="1815–1852",
        knowledge_cutoff=-44,
        speaking_style="line one\n---\nline three: with a colon, # and a hash",
        traits=["yes", "no", "null", "1815"],
        metadata={"card": {"tags": ["a", "b"], "nested": {"k": 1}}},
        example_dialogue=["{{user}}: hi", "{{char}}: hello"],
        paragraphs=[
            Paragraph(text="First --- paragraph with — dashes and ünïcödé."),
            Paragraph(text="Second.", heading="Later life"),
            Paragraph(text="Third.", heading="Later life"),
        ],
    )
    assert _roundtrip(p).model_dump() == p.model_dump()


def test_split_paragraphs_headings():
    got = split_paragraphs("Intro.\n\n## Part one\nA.\n\nB.\n\n# Part two\n\nC.\n")
    assert [(x.heading, x.text) for x in got] == [
        (None, "Intro."),
        ("Part one", "A."),
        ("Part one", "B."),
        ("Part two", "C."),
    ]


# ---------------------------------------------------------------------------------------------
# `charlite add`, `characters`, `show` and "did you mean"


def test_add_markdown_profile(charlite_home):
    result = _invoke("add", str(FIXTURES / "minimal.md"))
    assert result.exit_code == 0, result.output
    assert "added 'hopper' (Grace Brewster Hopper): 4 paragraphs" in result.stdout
    saved = charlite_home / "characters" / "hopper" / "profile.md"
    assert saved.is_file()
    assert load_profile(saved).model_dump() == load_profile(FIXTURES / "minimal.md").model_dump()

    listed = _invoke("characters")
    assert listed.exit_code == 0
    row = next(ln for ln in listed.stdout.splitlines() if "hopper" in ln)
    assert "user" in row and "1906" in row

    shown = _invoke("show", "hopper")
    assert shown.exit_code == 0
    assert "Grace Brewster Hopper (hopper)" in shown.stdout
    assert "4 paragraphs" in shown.stdout and "1 fact probes" in shown.stdout
    assert str(saved) in shown.stdout.replace("\n", "")

    again = _invoke("add", str(FIXTURES / "minimal.md"))
    assert again.exit_code == 1
    assert "already exists" in again.stderr and "--name" in again.stderr

    forced = _invoke("add", str(FIXTURES / "minimal.md"), "--force")
    assert forced.exit_code == 0


def test_add_wiki_txt_warns_and_uses_defaults(charlite_home):
    result = _invoke("add", str(FIXTURES / "wiki_Ada_Lovelace.txt"))
    assert result.exit_code == 0, result.output
    assert "added 'lovelace'" in result.stdout
    assert result.stderr.startswith("warning: wiki_Ada_Lovelace.txt has no era")
    p = characters.get_profile("lovelace")
    assert not p.bundled and p.era == "unknown" and len(p.paragraphs) == 6
    shown = _invoke("show", "lovelace")
    assert "knows up to: not set" in shown.stdout


def test_add_wiki_txt_colliding_with_a_bundled_character(tmp_path, charlite_home):
    wiki = tmp_path / "wiki_Beethoven.txt"
    wiki.write_text("# Ludwig van Beethoven\n\nA composer from Bonn.\n", encoding="utf-8")
    clash = _invoke("add", str(wiki))
    assert clash.exit_code == 1
    assert clash.stderr.strip() == (
        "error: a character 'beethoven' already exists (a bundled character); "
        "choose another name with --name SLUG, or --force to replace a user profile"
    )
    renamed = _invoke("add", str(wiki), "--name", "ludwig")
    assert renamed.exit_code == 0, renamed.output
    assert characters.get_profile("ludwig").name == "Ludwig van Beethoven"
    assert characters.get_profile("beethoven").bundled  # the bundled one is untouched


@pytest.mark.parametrize(
    "args, expected",
    [
        (["add", str(FIXTURES / "bad_yaml.md")], "front matter is not valid YAML"),
        (["add", str(FIXTURES / "bad_types.md")], "field 'knowledge_cutoff'"),
        (["add", "/nope/wiki_X.txt"], "no such file"),
        (["add", str(FIXTURES / "minimal.md"), "--name", "Bad Slug"], "field 'slug'"),
    ],
)
def test_add_bad_input_is_one_line(args, expected):
    result = _invoke(*args)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_unknown_name_did_you_mean():
    with pytest.raises(NotFoundError) as info:
        characters.find("beethovn")
    assert str(info.value) == "no character 'beethovn'; did you mean 'beethoven'?"
    for cmd in ("show", "chat"):
        result = _invoke(cmd, "beethovn", *(["-m", "hi"] if cmd == "chat" else []))
        assert result.exit_code == 1
        assert result.stderr == "error: no character 'beethovn'; did you mean 'beethoven'?\n"
    far = _invoke("show", "zzzzzz")
    assert far.exit_code == 1
    assert far.stderr == "error: no character 'zzzzzz'; run 'charlite characters' to list them\n"


def test_names_are_case_insensitive():
    assert characters.find("  Beethoven ").slug == "beethoven"


def test_malformed_user_profile_is_reported_not_fatal(charlite_home):
    folder = charlite_home / "characters" / "broken"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "bad_types.md", folder / "profile.md")
    listed = _invoke("characters")
    assert listed.exit_code == 0
    assert "beethoven" in listed.stdout
    assert "warning:" in listed.stderr and "knowledge_cutoff" in listed.stderr
    shown = _invoke("show", "broken")
    assert shown.exit_code == 1
    assert shown.stderr.startswith("error: ") and "field 'knowledge_cutoff'" in shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1


def test_user_profile_shadows_bundled_one(charlite_home):
    text = (FIXTURES / "minimal.md").read_text().replace("slug: hopper", "slug: newton")
    folder = charlite_home / "characters" / "newton"
    folder.mkdir(parents=True)
    (folder / "profile.md").write_text(text)
    p = characters.get_profile("newton")
    assert not p.bundled and p.name == "Grace Brewster Hopper"

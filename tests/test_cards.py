"""Character Cards in and out: JSON and PNG, V1/V2/V3, lorebooks, unknown extensions, round trips."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlite import cards
from charlite.characters import character_refs, get_profile
from charlite.cli import cli
from charlite.profile import Paragraph, dump_markdown, parse_markdown

FIXTURES = Path(__file__).parent / "fixtures" / "cards"
CARD_FILES = sorted(FIXTURES.glob("*.json"))


def _data(card: dict) -> dict:
    return card.get("data", card)


def _assert_fields_kept(original: dict, exported: dict) -> None:
    """Every field of the original card is in the export with the same value."""
    src, out = _data(original), exported["data"]
    for key, value in src.items():
        if key == "extensions":
            ext = dict(out["extensions"])
            assert ext.pop("charlite")["format"] == 1
            assert ext == value
        else:
            assert out[key] == value, key
    for key, value in original.items():
        if key not in ("spec", "spec_version", "data") and "data" in original:
            assert exported[key] == value


def _png_chunk_types(data: bytes) -> list[tuple[bytes, bytes]]:
    return cards.png_chunks(data)


def _make_png(*text_chunks: tuple[bytes, bytes]) -> bytes:
    """A 1x1 PNG with the given (type, payload) chunks before IEND."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    body = [cards.png_chunk(b"IHDR", ihdr), cards.png_chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))]
    body += [cards.png_chunk(kind, payload) for kind, payload in text_chunks]
    return cards.PNG_SIGNATURE + b"".join(body) + cards.png_chunk(b"IEND", b"")


def _b64(card: dict) -> bytes:
    return base64.b64encode(json.dumps(card).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# import mapping


def test_v2_card_maps_onto_profile():
    p = cards.load_card_profile(FIXTURES / "seraphina_v2.json")
    assert (p.name, p.slug, p.short_name) == ("Seraphina", "seraphina", "Seraphina")
    texts = p.paragraph_texts()
    # description: two paragraphs (lines joined), macros written out
    assert texts[0].startswith("Seraphina is a guardian of the Eldertree forest")
    assert "She has long pink hair" in texts[0]
    assert texts[1] == "Seraphina met Visitor after finding them hurt on the forest path."
    headings = [par.heading for par in p.paragraphs]
    assert headings == [
        None,
        None,
        "Personality",
        "Scenario",
        "Lore: Eldertree",
        "Lore: enemies",
        "Lore: enemies",
    ]
    assert all("{{" not in t for t in texts)
    # the disabled lorebook entry is not knowledge
    assert not any("disabled entry" in t for t in texts)
    # first_mes, then one item per <START> block
    assert len(p.example_dialogue) == 3
    assert p.example_dialogue[0].endswith("Don't move too quickly, Visitor.")
    assert (
        p.example_dialogue[1]
        == "Visitor: Who are you?\nSeraphina: *She smiles.* I am Seraphina, keeper of this glade."
    )
    kept = p.metadata["card"]["fields"]
    assert kept["tags"] == ["fantasy", "healer", "female"]
    assert kept["creator_notes"] == "Works best with long replies."
    assert kept["extensions"]["some_app_v9"] == {"nested": {"list": [1, 2.5, None, True, "x"]}}
    # no era or cutoff in a card: defaults and a warning saying what to add
    assert p.era == "unknown" and p.knowledge_cutoff is None
    assert any("knowledge_cutoff" in w for w in p.warnings)


def test_v3_card_uses_nickname_and_keeps_v3_fields():
    p = cards.load_card_profile(FIXTURES / "aria_v3.json")
    assert (
        p.name == "Captain Aria Voss" and p.short_name == "Aria" and p.slug == "captain-aria-voss"
    )
    assert p.paragraphs[1] == Paragraph(
        text="Aria grew up on Ceres station and served ten years in the colonial navy.",
        heading="Past",
    )
    kept = p.metadata["card"]["fields"]
    assert kept["nickname"] == "Aria"
    assert kept["creator_notes_multilingual"]["de"] == "Sci-Fi-Kapitänin."
    assert kept["assets"][0]["uri"] == "ccdefault:"
    assert kept["group_only_greetings"] == ["Aria nods at the group. Crew meeting in five."]


def test_v1_card_is_read():
    p = cards.load_card_profile(FIXTURES / "old_v1.json")
    assert (
        p.paragraph_texts()[0]
        == "Old Tom is a retired lighthouse keeper who talks to Visitor about storms."
    )
    assert p.example_dialogue == ["Eh? Another visitor?"]


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("path", CARD_FILES, ids=lambda p: p.name)
def test_json_card_round_trip_keeps_every_field(path, tmp_path):
    original = json.loads(path.read_text(encoding="utf-8"))
    first = cards.load_card_profile(path)
    # through the profile.md that `charlite add` writes
    first_md = parse_markdown(dump_markdown(first), tmp_path / "profile.md")
    assert first_md.model_dump() == first.model_dump()
    out = tmp_path / "out.json"
    cards.write_card(first_md, out)
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported["spec"] == "chara_card_v3" and exported["spec_version"] == "3.0"
    for key in cards.DEFAULT_FIELDS:  # every V2 field is there for older apps
        assert key in exported["data"]
    _assert_fields_kept(original, exported)
    second = cards.load_card_profile(out)
    assert second.model_dump() == first.model_dump()
    assert cards.card_from_profile(second) == exported


@pytest.mark.parametrize("path", CARD_FILES, ids=lambda p: p.name)
def test_png_card_round_trip(path, tmp_path):
    original = json.loads(path.read_text(encoding="utf-8"))
    first = cards.load_card_profile(path)
    png = tmp_path / "card.png"
    cards.write_card(first, png)
    raw = png.read_bytes()
    kinds = [k for k, _ in cards.png_chunks(raw)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    texts = cards.png_text(cards.png_chunks(raw))
    v3 = json.loads(base64.b64decode(texts["ccv3"]))
    v2 = json.loads(base64.b64decode(texts["chara"]))
    assert (
        v3["spec"] == "chara_card_v3"
        and v2["spec"] == "chara_card_v2"
        and v2["spec_version"] == "2.0"
    )
    assert v2["data"] == v3["data"]
    _assert_fields_kept(original, v3)
    second = cards.load_card_profile(png)
    assert second.model_dump() == first.model_dump()


def test_png_card_is_a_real_image(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    png = tmp_path / "b.png"
    cards.write_card(get_profile("beethoven"), png)
    with PIL.open(png) as img:
        img.load()
        assert img.size == (256, 384) and img.mode == "RGB"
        assert (
            json.loads(base64.b64decode(img.text["ccv3"]))["data"]["name"] == "Ludwig van Beethoven"
        )
        colours = img.getcolors(maxcolors=100_000)
        assert colours is not None and len(colours) > 10  # a gradient, not a blank


@pytest.mark.parametrize("slug", sorted(character_refs()))
def test_bundled_profile_round_trips_through_a_card(slug, tmp_path):
    profile = get_profile(slug)
    out = tmp_path / f"{slug}.png"
    cards.write_card(profile, out)
    back = cards.load_card_profile(out)
    assert back.model_dump() == profile.model_dump()
    assert back.warnings == []  # era and cutoff travelled in extensions.charlite
    card = cards.card_from_profile(profile)
    data = card["data"]
    assert data["name"] == profile.name
    assert profile.paragraphs[0].text in data["description"]
    assert data["scenario"].startswith(profile.default_scene.location)
    assert data["first_mes"]  # a greeting for front ends


def test_edited_profile_exports_its_edits_and_keeps_the_rest(tmp_path):
    first = cards.load_card_profile(FIXTURES / "seraphina_v2.json")
    original = cards.card_from_profile(first)["data"]
    edited = first.model_copy(deep=True)
    edited.paragraphs[1] = Paragraph(text="Seraphina found the Visitor by the river.")
    edited.paragraphs[5] = Paragraph(text="Shadow beasts fear fire.", heading="Lore: enemies")
    edited.paragraphs.append(Paragraph(text="The glade has a silver pond.", heading="Lore: pond"))
    data = cards.card_from_profile(edited)["data"]
    assert data["description"].endswith("Seraphina found the Visitor by the river.")
    # unedited fields keep their exact card text, macros included
    assert data["personality"] == original["personality"]
    assert data["scenario"] == original["scenario"]
    assert data["mes_example"] == original["mes_example"]
    entries = data["character_book"]["entries"]
    enemies = next(e for e in entries if e.get("comment") == "enemies")
    assert enemies["keys"] == ["shadow beasts", "shadows"]  # the entry's settings survive
    assert (
        enemies["content"]
        == "Shadow beasts fear fire.\n\nOnly sunlight and the Eldertree's light can drive them away."
    )
    pond = next(e for e in entries if e.get("name") == "pond")
    assert pond["keys"] == ["pond"] and pond["enabled"] is True
    assert any(e.get("enabled") is False for e in entries)  # the disabled entry is kept
    assert data["character_book"]["scan_depth"] == 4
    back = cards.profile_from_card(cards.card_from_profile(edited), "edited.json")
    assert back.paragraph_texts() == edited.paragraph_texts()


def test_ccv3_chunk_is_preferred_over_chara(tmp_path):
    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {"name": "Newer", "description": "From ccv3."},
    }
    v2 = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Older", "description": "From chara."},
    }
    for order in ((b"chara", v2), (b"ccv3", v3)), ((b"ccv3", v3), (b"chara", v2)):
        path = tmp_path / "both.png"
        path.write_bytes(_make_png(*((b"tEXt", key + b"\0" + _b64(card)) for key, card in order)))
        assert cards.load_card_profile(path).name == "Newer"


def test_broken_ccv3_falls_back_to_chara_with_a_warning(tmp_path):
    v2 = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Older", "description": "Text."},
    }
    path = tmp_path / "mixed.png"
    path.write_bytes(
        _make_png((b"tEXt", b"ccv3\0!!!not base64!!!"), (b"tEXt", b"chara\0" + _b64(v2)))
    )
    p = cards.load_card_profile(path)
    assert p.name == "Older"
    assert any("'ccv3' chunk is not valid base64" in w for w in p.warnings)


def test_compressed_text_chunks_are_read(tmp_path):
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Zed", "description": "Zipped."},
    }
    ztxt = b"chara\0\0" + zlib.compress(_b64(card))
    itxt = b"ccv3\0\x01\0\0\0" + zlib.compress(
        _b64({**card, "spec": "chara_card_v3", "spec_version": "3.0"})
    )
    path = tmp_path / "z.png"
    path.write_bytes(_make_png((b"zTXt", ztxt)))
    assert cards.load_card_profile(path).name == "Zed"
    path.write_bytes(_make_png((b"iTXt", itxt)))
    assert cards.load_card_profile(path).paragraph_texts() == ["Zipped."]


def test_image_option_carries_the_card_and_replaces_old_chunks(tmp_path):
    old = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Stale", "description": "Old."},
    }
    picture = tmp_path / "picture.png"
    picture.write_bytes(_make_png((b"tEXt", b"chara\0" + _b64(old)), (b"tEXt", b"Comment\0kept")))
    out = tmp_path / "card.png"
    result = CliRunner().invoke(cli, ["card", "socrates", "-o", str(out), "--image", str(picture)])
    assert result.exit_code == 0, result.output
    chunks = cards.png_chunks(out.read_bytes())
    idat = [p for k, p in chunks if k == b"IDAT"]
    assert idat == [p for k, p in cards.png_chunks(picture.read_bytes()) if k == b"IDAT"]
    keys = [p.split(b"\0")[0] for k, p in chunks if k == b"tEXt"]
    assert sorted(keys) == [b"Comment", b"ccv3", b"chara"]
    assert cards.load_card_profile(out).name == "Socrates"


# ---------------------------------------------------------------------------------------------
# the commands


def test_card_command_writes_json_and_png(tmp_path):
    runner = CliRunner()
    for name in ("b.json", "b.png"):
        result = runner.invoke(cli, ["card", "beethoven", "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert f"wrote {tmp_path / name}" in result.output
        assert "Character Card V3 'Ludwig van Beethoven', 16 paragraphs" in result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["data"]["extensions"]["charlite"]["knowledge_cutoff"] == 1827
    again = runner.invoke(cli, ["card", "beethoven", "-o", str(tmp_path / "b.json")])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(cli, ["card", "beethoven", "-o", str(tmp_path / "b.txt")])
    assert bad.exit_code == 1 and "written as .json or .png" in bad.output
    missing = runner.invoke(cli, ["card", "beethovn", "-o", str(tmp_path / "x.json")])
    assert missing.exit_code == 1 and "did you mean 'beethoven'" in missing.output


@pytest.mark.parametrize("fmt", ["json", "png"])
def test_add_imports_a_card_and_export_gives_it_back(fmt, tmp_path, charlite_home):
    runner = CliRunner()
    source = FIXTURES / "seraphina_v2.json"
    if fmt == "png":
        card_png = tmp_path / "seraphina.png"
        card_png.write_bytes(
            cards.png_with_card(cards.portrait_png("x"), json.loads(source.read_text()))
        )
        source = card_png
    result = runner.invoke(cli, ["add", str(source)])
    assert result.exit_code == 0, result.output
    assert "added 'seraphina' (Seraphina): 7 paragraphs" in result.output
    assert "knowledge_cutoff" in result.stderr  # the warning says what to add
    assert (charlite_home / "characters" / "seraphina" / "profile.md").is_file()
    stored = get_profile("seraphina")
    assert stored.model_dump() == cards.load_card_profile(source).model_dump()
    out = tmp_path / f"again.{fmt}"
    assert runner.invoke(cli, ["card", "seraphina", "-o", str(out)]).exit_code == 0
    exported = cards.read_card(out)[0]
    _assert_fields_kept(json.loads((FIXTURES / "seraphina_v2.json").read_text()), exported)
    # a second import under another name is the same character
    result = runner.invoke(cli, ["add", str(out), "--name", "sera2"])
    assert result.exit_code == 0, result.output
    twin = get_profile("sera2").model_dump()
    first = stored.model_dump()
    assert twin.pop("slug") == "sera2" and first.pop("slug") == "seraphina"
    assert twin == first


# ---------------------------------------------------------------------------------------------
# any JSON a card holds survives profile.md (the YAML that `charlite add` writes)

_YAML_BREAKS = "\x85\u2028\u2029"  # YAML line breaks: see test_yaml_line_break_characters_survive
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=_YAML_BREAKS),
    max_size=20,
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(_TEXT, _JSON, max_size=3), _TEXT, _TEXT, _TEXT)
def test_any_card_json_round_trips_through_profile_md(extensions, description, name, notes):
    card = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": "N" + name,
            "description": "x " + description,
            "creator_notes": notes,
            "extensions": extensions,
            "unknown_field": extensions,
        },  # fmt: skip
    }
    card = json.loads(json.dumps(card))
    first = cards.profile_from_card(card, "c.json")
    stored = parse_markdown(dump_markdown(first), Path("profile.md"))
    assert stored.model_dump() == first.model_dump()
    exported = cards.card_from_profile(stored)
    _assert_fields_kept(card, exported)
    assert (
        cards.profile_from_card(json.loads(json.dumps(exported)), "c.json").model_dump()
        == first.model_dump()
    )


def test_yaml_line_break_characters_survive():
    card = {
        "spec": "chara_card_v2",
        "data": {"name": "N", "description": "x", "creator_notes": "a\x85b\u2028c"},
    }
    first = cards.profile_from_card(card, "c.json")
    stored = parse_markdown(dump_markdown(first), Path("profile.md"))
    assert stored.metadata == first.metadata


def test_yaml_dates_in_metadata_export_as_text():
    import datetime

    profile = get_profile("newton")
    profile.metadata = {"added": datetime.date(2024, 1, 2)}
    card = cards.card_from_profile(profile)
    assert card["data"]["extensions"]["charlite"]["metadata"] == {"added": "2024-01-02"}
    json.dumps(card)

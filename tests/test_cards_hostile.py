"""Bad and hostile cards: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
from click.testing import CliRunner

from charlite import cards
from charlite.cli import cli
from charlite.errors import ProfileError


def _png(*chunks: tuple[bytes, bytes]) -> bytes:
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    body = [cards.png_chunk(b"IHDR", ihdr), cards.png_chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))]
    body += [cards.png_chunk(k, p) for k, p in chunks]
    return cards.PNG_SIGNATURE + b"".join(body) + cards.png_chunk(b"IEND", b"")


def _card(**data) -> dict:
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Bad", "description": "x", **data},
    }


def _add(path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["add", str(path)])
    return result.exit_code, result.output


def _assert_one_line(path, *expected: str) -> None:
    code, output = _add(path)
    assert code == 1, output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and "Traceback" not in output
    for text in expected:
        assert text in lines[0], lines[0]


def test_png_without_a_card_chunk(tmp_path):
    path = tmp_path / "plain.png"
    path.write_bytes(_png((b"tEXt", b"Comment\0just a picture")))
    _assert_one_line(path, "holds no character card", "'ccv3' or 'chara'")


def test_invalid_base64(tmp_path):
    path = tmp_path / "b64.png"
    path.write_bytes(_png((b"tEXt", b"chara\0eyJuYW1l$$$not*base64")))
    _assert_one_line(path, "'chara' chunk is not valid base64")


def test_base64_of_something_that_is_not_json(tmp_path):
    path = tmp_path / "nojson.png"
    path.write_bytes(_png((b"tEXt", b"ccv3\0" + base64.b64encode(b"hello there"))))
    _assert_one_line(path, "'ccv3' chunk is not valid JSON")
    path.write_bytes(_png((b"tEXt", b"ccv3\0" + base64.b64encode(b"\xff\xfe\x00"))))
    _assert_one_line(path, "does not decode to UTF-8 JSON")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"description": 42}, "field 'data.description' must be text, not number"),
        ({"tags": "fantasy"}, "field 'data.tags' must be a list of text"),
        ({"extensions": []}, "field 'data.extensions' must be an object, not list"),
        ({"character_book": {"entries": {"a": 1}}}, "'data.character_book.entries' must be a list"),
        ({"character_book": {"entries": [{"content": ["x"]}]}}, "entries.0.content' must be text"),
        (
            {"character_book": {"entries": [{"content": "x", "enabled": "yes"}]}},
            "entries.0.enabled' must be true or false",
        ),
        ({"name": None}, "field 'data.name' is missing"),
        ({"name": 7}, "field 'data.name' is number, not text"),
        ({"name": "x" * 300}, "field 'name'"),
        (
            {"description": "", "personality": None},
            "has no description, personality, scenario or lorebook",
        ),
    ],
)
def test_wrong_types(tmp_path, data, message):
    path = tmp_path / "card.json"
    path.write_text(json.dumps(_card(**data)))
    _assert_one_line(path, message)


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ([1, 2, 3], "not a Character Card (the JSON is a list"),
        ({"hello": "world"}, "not a Character Card (no 'spec'"),
        ({"spec": "something_else", "data": {}}, "spec 'something_else' is not chara_card_v2"),
        ({"spec": "chara_card_v2", "data": "text"}, "field 'data' must be an object, not text"),
    ],
)
def test_not_a_card(tmp_path, card, message):
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    _assert_one_line(path, message)


def test_fifty_megabyte_chunk(tmp_path):
    path = tmp_path / "huge.png"
    payload = b"chara\0" + b"A" * (50 * 1024 * 1024)
    path.write_bytes(_png((b"tEXt", payload)))
    _assert_one_line(path, "over the 20 MiB limit for a card file")


def test_chunk_over_the_chunk_limit(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png((b"tEXt", b"chara\0" + b"A" * (6 * 1024 * 1024))))
    _assert_one_line(path, "tEXt chunk of 6.0 MiB is over the 5 MiB limit")


def test_chunk_that_claims_fifty_megabytes(tmp_path):
    good = _png((b"tEXt", b"chara\0AAAA"))
    pos = good.index(b"tEXt") - 4
    forged = good[:pos] + struct.pack(">I", 50 * 1024 * 1024) + good[pos + 4 :]
    path = tmp_path / "claims.png"
    path.write_bytes(forged)
    _assert_one_line(path, "tEXt chunk of 50 MiB is over the 5 MiB limit")


def test_decompression_bomb(tmp_path):
    bomb = zlib.compress(b"A" * (64 * 1024 * 1024), 9)  # 64 MiB of text in about 64 KiB
    path = tmp_path / "bomb.png"
    path.write_bytes(_png((b"zTXt", b"chara\0\0" + bomb)))
    _assert_one_line(path, "inflates past the 5 MiB limit")


def test_truncated_and_corrupt_pngs(tmp_path):
    good = _png((b"tEXt", b"chara\0" + base64.b64encode(json.dumps(_card()).encode())))
    path = tmp_path / "cut.png"
    path.write_bytes(good[:-20])
    _assert_one_line(path, "truncated")
    flipped = bytearray(good)
    flipped[good.index(b"chara") + 8] ^= 0x01
    path.write_bytes(bytes(flipped))
    _assert_one_line(path, "CRC mismatch in a tEXt chunk")
    path.write_bytes(b"GIF89a not a png")
    _assert_one_line(path, "not a PNG file")


def test_deeply_nested_json(tmp_path):
    path = tmp_path / "deep.json"
    nested = "[" * 100_000 + "]" * 100_000
    path.write_text(
        '{"spec": "chara_card_v2", "data": {"name": "D", "description": "x", "extensions": {"a": '
        + nested
        + "}}}"
    )
    _assert_one_line(path, "nested")
    path.write_text(json.dumps(_card(extensions={"a": json.loads("[" * 80 + "]" * 80)})))
    _assert_one_line(path, "nested more than 64 levels deep")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_numbers_json_cannot_carry(tmp_path, number):
    path = tmp_path / "nan.json"
    head = (
        '{"spec": "chara_card_v2", "data": {"name": "S", "description": "x", "extensions": {"a": '
    )
    path.write_text(head + number + "}}}")
    _assert_one_line(path, "a number JSON cannot carry")


def test_lone_surrogate_and_bad_utf8(tmp_path):
    path = tmp_path / "surrogate.json"
    path.write_text(
        '{"spec": "chara_card_v2", "data": {"name": "S", "description": "bad \\ud800 text"}}'
    )
    _assert_one_line(path, "invalid Unicode")
    path.write_bytes(b'{"spec": "chara_card_v2", "data": {"name": "\xff"}}')
    _assert_one_line(path, "not UTF-8 text")


def test_hostile_metadata_in_a_profile_does_not_break_export():
    """A hand-edited profile.md with nonsense in metadata.card still exports."""
    p = cards.profile_from_card(_card(description="Plain text."), "x.json")
    p.metadata["card"]["original"] = {"description": ["not", "text"], "character_book": "nope"}
    p.metadata["card"]["fields"] = "not a dict"
    card = cards.card_from_profile(p)
    assert card["data"]["description"] == "Plain text."
    assert cards.profile_from_card(card, "y.json").paragraph_texts() == ["Plain text."]


def test_errors_are_profile_errors(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ProfileError):
        cards.read_card(path)
    with pytest.raises(ProfileError, match="no such file"):
        cards.read_card(tmp_path / "missing.json")
    with pytest.raises(ProfileError, match="is a folder"):
        cards.read_card(tmp_path)

"""charlite card NAME -o FILE.json|FILE.png [--image PNG]: export a Character Card V3."""

from __future__ import annotations

from pathlib import Path

import click

from charlite import characters as registry
from charlite.cards import write_card
from charlite.cli.complete import complete_character
from charlite.errors import CharliteError


@click.command()
@click.argument("name", shell_complete=complete_character)
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(path_type=Path),
    help="FILE.json for a JSON card, FILE.png for a PNG card.",
)  # fmt: skip
@click.option(
    "--image", type=click.Path(path_type=Path, dir_okay=False, readable=False),
    help="A PNG picture to carry the card (default: a generated portrait).",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def card(name: str, output: Path, image: Path | None, force: bool) -> None:
    """Export a character as a Character Card V3 (with the V2 fields for older apps)."""

    profile = registry.get_profile(name)
    if output.is_file() and not force:  # before the work; write_card checks again as it writes
        raise CharliteError(f"{output} already exists", hint="pass --force to replace it")
    written = write_card(profile, output, image, force=force)
    data = written["data"]
    book = data.get("character_book") or {}
    lore = f", lorebook of {len(book.get('entries') or [])} entries" if book else ""
    kind = "PNG card (ccv3 + chara chunks)" if output.suffix.lower() == ".png" else "JSON card"
    click.echo(
        f"wrote {output}: {kind}, Character Card V3 '{data['name']}', "
        f"{len(profile.paragraphs)} paragraphs{lore}"
    )

"""charlite characters / show / add."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from charlite import characters as registry
from charlite.cli.complete import complete_character
from charlite.cli.output import console, warn
from charlite.errors import CharliteError
from charlite.home import CharacterPaths


def _artifacts(slug: str) -> tuple[list[str], list[str], list[str]]:
    paths = CharacterPaths.of(slug)
    return paths.datasets(), paths.runs(), paths.exports()


def _cell(items: list[str]) -> str:
    return ", ".join(items) if items else "-"


@click.command()
def characters() -> None:
    """List bundled and user characters, with their datasets, runs and exports."""
    table = Table(title="characters")
    for col in ("slug", "name", "era", "source", "datasets", "runs", "exports"):
        table.add_column(col)
    problems = []
    for slug, ref in registry.character_refs().items():
        try:
            p = registry.get_profile(slug)
        except CharliteError as exc:
            problems.append(str(exc))
            continue
        data, runs, exports = _artifacts(slug)
        table.add_row(
            slug,
            p.name,
            p.era,
            "bundled" if ref.bundled else "user",
            _cell(data),
            _cell(runs),
            _cell(exports),
        )
    console().print(table)
    for problem in problems:
        warn(problem)


@click.command()
@click.argument("name", shell_complete=complete_character)
def show(name: str) -> None:
    """A character's profile summary and artifacts."""
    p = registry.get_profile(name)
    ref = registry.find(name)
    out = console()
    out.print(f"[bold]{p.name}[/bold] ({p.slug}), {p.era}")
    out.print(f"profile:   {ref.path} ({'bundled' if ref.bundled else 'user'})")
    cutoff = p.knowledge_cutoff if p.knowledge_cutoff is not None else "not set"
    out.print(f"knows up to: {cutoff}   home: {p.home or '-'}")
    scene = p.default_scene
    out.print(f"scene:     {scene.location}\n           {scene.status}")
    if p.speaking_style:
        out.print(f"style:     {p.speaking_style}")
    if p.traits:
        out.print(f"traits:    {', '.join(p.traits)}")
    words = sum(len(t.split()) for t in p.paragraph_texts())
    out.print(
        f"profile:   {len(p.paragraphs)} paragraphs, {words} words, {len(p.facts)} fact probes"
    )
    # here, not at the top: the backends it loads cost `charlite characters` (the listing in
    # the same module, timed by benchmarks/startup.py) a tenth of a second for nothing
    from charlite.voices import resolve_model

    resolved = resolve_model(p)
    out.print(f"chat model: {resolved.label}", markup=False)
    if not resolved.prompted:
        out.print(
            "            (the newest export wins over the default model; "
            "--prompted uses the default model with the profile instead)",
            markup=False,
        )
    else:
        out.print(
            "            (the default model, prompted with the profile: "
            "'charlite config set model SPEC' changes it; a trained export would win)",
            markup=False,
        )
    data, runs, exports = _artifacts(p.slug)
    out.print(f"datasets:  {_cell(data)}")
    out.print(f"runs:      {_cell(runs)}")
    out.print(f"exports:   {_cell(exports)}")
    for w in p.warnings:
        warn(w)


@click.command()
@click.argument("path", type=click.Path(path_type=Path, readable=False))
@click.option("--name", "slug", help="The slug to save it under (default: from its name).")
@click.option("--force", is_flag=True, help="Replace a user profile with the same slug.")
def add(path: Path, slug: str | None, force: bool) -> None:
    """Import a profile: a charlite .md, a Character-LLM wiki .txt or a Character Card."""
    profile = registry.add_profile(path, slug, force)
    for w in profile.warnings:
        warn(w)
    click.echo(
        f"added '{profile.slug}' ({profile.name}): {len(profile.paragraphs)} paragraphs "
        f"-> {CharacterPaths.of(profile.slug).profile}"
    )

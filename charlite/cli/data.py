"""charlite data stats / export / import: inspect and move a character's training data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from charlite import characters as registry
from charlite.cli.complete import complete_character, complete_dataset
from charlite.cli.output import console, warn
from charlite.errors import StorageError
from charlite.experience.dataset import Dataset
from charlite.experience.formats import dumps_records, export_records, import_file
from charlite.experience.stats import dataset_stats
from charlite.files import write_output

EXPORT_FORMATS = ("sharegpt", "messages", "character-llm")


@click.group()
def data() -> None:
    """Inspect, export and import training data."""


def _load(name: str, dataset: str):
    profile = registry.get_profile(name)
    return profile, Dataset(profile.slug, dataset)


@data.command()
@click.argument("name", shell_complete=complete_character)
@click.option(
    "--dataset",
    shell_complete=complete_dataset,
    default="default",
    show_default=True,
    help="The dataset to read.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def stats(name: str, dataset: str, as_json: bool) -> None:
    """Records per stage, turns, words, thinking share, coverage and failures."""

    profile, ds = _load(name, dataset)
    s = dataset_stats(profile, ds)
    if as_json:
        click.echo(json.dumps(s, indent=2, ensure_ascii=False))
        return
    out = console()
    r, t, c = s["records"], s["turns_per_experience"], s["character_turns"]
    out.print(f"[bold]{profile.name}[/bold] · dataset {ds.name} ({s['status'] or 'no manifest'})")
    out.print(f"teacher: {s['teacher'] or '-'}   prompts: {s['prompt_version'] or '-'}")
    out.print(
        f"records: {r['scenes']} scenes, {r['experiences']} experiences, {r['protective']} protective"
    )
    out.print(f"turns per experience: mean {t['mean']}, min {t['min']}, max {t['max']}")
    w = s["words"]
    out.print(
        f"words: {w['total']} ({w['experiences']} in experiences, {w['protective']} in protective)"
    )
    out.print(
        f"{profile.short_name}'s turns: {c['thinking']} thinking ({c['thinking_share']:.0%}), "
        f"{c['speaking']} speaking ({c['speaking_share']:.0%}); others' turns: {s['other_turns']}"
    )
    cov = s["coverage"]
    out.print(
        f"coverage: {cov['covered']} of {cov['paragraphs']} profile paragraphs, "
        f"{cov['facts_covered']} of {cov['facts']} fact probes"
    )
    missing = [f["question"] for f in cov["per_fact"] if not f["covered"]]
    if missing:
        out.print("fact probes no answer names: " + "; ".join(missing), markup=False)
    table = Table(show_edge=False, pad_edge=False)
    for col in ("paragraph", "scenes", "experiences", "begins"):
        table.add_column(col)
    for row in cov["per_paragraph"]:
        if row["scenes"] or row["experiences"]:
            table.add_row(
                str(row["paragraph"]), str(row["scenes"]), str(row["experiences"]), row["text"]
            )
    if table.row_count:
        out.print(table)
    if s["failures"]:
        out.print("failed attempts: " + ", ".join(f"{k} {v}" for k, v in s["failures"].items()))
    else:
        out.print("failed attempts: none")
    for src in s["sources"]:
        n = sum((src["records"] or {}).values())
        out.print(f"imported: {src['file']} ({_n(n, 'record')}, {src['skipped']} skipped)")


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@data.command()
@click.argument("name", shell_complete=complete_character)
@click.option(
    "--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True, help="The output format."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write to FILE (.json: one JSON array; else JSONL). Default: standard output.",
)
@click.option(
    "--dataset",
    shell_complete=complete_dataset,
    default="default",
    show_default=True,
    help="The dataset to export.",
)
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option(
    "--stage",
    type=click.Choice(["all", "experiences", "protective"]),
    default="all",
    show_default=True,
    help="Which experiences to export.",
)
def export(name: str, fmt: str, output: Path | None, dataset: str, force: bool, stage: str) -> None:
    """Export experiences as ShareGPT, chat messages or Character-LLM prompted SFT."""

    profile, ds = _load(name, dataset)
    if output is not None and output.is_file() and not force:  # before the work
        raise StorageError(f"{output} already exists", hint="pass --force to replace it")
    ds.require()
    stages = ("experiences", "protective") if stage == "all" else (stage,)
    records = export_records(profile, ds, fmt, stages)
    as_array = output is not None and output.suffix.lower() == ".json"
    text = dumps_records(records, as_array)
    if output is None:
        sys.stdout.write(text)
        return
    write_output(output, text, force=force)
    click.echo(f"wrote {len(records)} {fmt} records to {output}", err=True)


@data.command(name="import")
@click.argument("name", shell_complete=complete_character)
@click.argument("file", type=click.Path(path_type=Path, readable=False))
@click.option(
    "--dataset",
    shell_complete=complete_dataset,
    default="default",
    show_default=True,
    help="The dataset to add to.",
)
def import_(name: str, file: Path, dataset: str) -> None:
    """Import Character-LLM scenes, experiences or prompted data, ShareGPT or messages JSONL."""

    profile, ds = _load(name, dataset)
    result = import_file(profile, file, ds)
    for where, why in result.bad[:20]:
        warn(f"{file}: {where}: {why}; skipped")
    if len(result.bad) > 20:
        warn(f"... and {len(result.bad) - 20} more bad records")
    new = sum(result.records.values())
    parts = ", ".join(f"{n} {stage}" for stage, n in result.records.items()) or "nothing new"
    formats = ", ".join(f"{k} {v}" for k, v in result.formats.items())
    line = f"imported {_n(new, 'record')} into {result.dataset}: {parts}"
    if formats:
        line += f" (from {formats})"
    if result.duplicates:
        line += f"; {result.duplicates} already there"
    if result.bad:
        line += f"; skipped {_n(len(result.bad), 'bad record')}"
    click.echo(line)

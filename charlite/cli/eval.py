"""charlite eval RESULTS...: judge interview results, run the checks, compare side by side."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from charlite import settings
from charlite.backends import get_backend
from charlite.cli.complete import complete_model_spec
from charlite.cli.output import console, progress_bar, verbose, warn
from charlite.cli.settings_option import SettingOption
from charlite.eval import evaluate as ev
from charlite.eval.judge import JUDGE_PARAMS, Judge
from charlite.eval.report import CHECK_TITLES, write_report
from charlite.eval.stats import Stat


@click.command(name="eval")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--judge",
    "judge_spec",
    cls=SettingOption,
    setting="judge",
    shell_complete=complete_model_spec,
    metavar="SPEC",
    help="The judge model: embedded, gguf:PATH, a pulled model's name, ollama:TAG, openai:MODEL@URL.",
)
@click.option("--no-judge", is_flag=True, help="Only the deterministic checks; no judge model.")
@click.option(
    "--limit", type=click.IntRange(min=1), help="Judge only the first N replies of each file."
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.md, PNG charts and scores.jsonl to this folder.",
)
@click.option(
    "--character",
    metavar="NAME",
    help="The character of result files that do not say (the paper's files).",
)
@click.option(
    "--attempts",
    type=click.IntRange(1, 10),
    default=3,
    show_default=True,
    help="Tries per judgement before it is marked unscored.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(32, 4096),
    default=320,
    show_default=True,
    help="Longest judge reply in tokens.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the judge's sampling and of the bootstrap.",
)
def eval_(results, judge_spec, no_judge, limit, report_dir, character, attempts, max_tokens, seed):
    """Judge interview results (charlite's or the paper's single-turn files) and report."""
    inputs = ev.prepare(list(results), character)
    checks = ev.check_records(inputs)
    judgements: list[dict] = []
    judge = None
    if not no_judge:
        backend = get_backend(settings.value("judge", judge_spec), verbose=verbose())
        judge = Judge(
            backend, params=JUDGE_PARAMS.with_(max_tokens=max_tokens), attempts=attempts, seed=seed
        )
        judgements = _judge(inputs, judge, report_dir, limit)
    judge_name = judge.spec if judge else None
    summary = ev.summary(inputs, judgements, checks, judge=judge_name, limit=limit, seed=seed)
    _render(summary)
    if report_dir:
        written = write_report(report_dir, summary, checks)
        console().print(
            "report: "
            + ", ".join(str(p) for p in [report_dir / "scores.jsonl", *written] if p.exists()),
            highlight=False,
            soft_wrap=True,
        )


def _judge(inputs, judge: Judge, report_dir: Path | None, limit: int | None) -> list[dict]:
    """The judgements of every reply, new or reused from the scores file."""
    scores_path = (
        (report_dir / "scores.jsonl") if report_dir else ev.default_scores_path(inputs, judge.spec)
    )
    with progress_bar(f"judging with {judge.spec}") as progress:
        run = ev.judge_all(inputs, judge, scores_path, limit=limit, progress=progress)
    judgements = run.records
    console(stderr=True).print(
        f"{run.new} new judgements, {run.reused} reused → {run.path}",
        highlight=False,
        soft_wrap=True,
    )
    unscored = sum(1 for r in judgements if r.get("score") is None)
    if unscored:
        warn(
            f"{unscored} of {len(judgements)} judgements are unscored (the judge never gave a valid score)"
        )
    return judgements


def _render(summary: dict) -> None:
    out = console()
    labels = [f["label"] for f in summary["files"]]

    def cell(data, percent=False):
        return Stat(**data).fmt(percent=percent) if data else "–"

    if summary.get("judge"):
        table = Table(title=f"Scores (1-7, 95% CI) · judge {summary['judge']}")
        table.add_column("dimension")
        for lb in labels:
            table.add_column(lb)
        for dim in summary["dimensions"]:
            table.add_row(dim, *[cell(summary["scores"][lb].get(dim)) for lb in labels])
        out.print(table)
    table = Table(title="Checks (share of replies, 95% CI)")
    table.add_column("check")
    for lb in labels:
        table.add_column(lb)
    for name in summary["checks_order"]:
        table.add_row(
            CHECK_TITLES.get(name, name),
            *[cell(summary["checks"][lb].get(name), True) for lb in labels],
        )
    out.print(table)

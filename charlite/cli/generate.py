"""charlite generate NAME: reconstruct a character's experiences with a teacher model."""

from __future__ import annotations

import click
from rich import progress as bars

from charlite import characters as registry
from charlite import settings
from charlite.cli.complete import complete_character, complete_dataset, complete_model_spec
from charlite.cli.output import console, warn
from charlite.cli.settings_option import SettingOption
from charlite.experience.grounded import DEFAULT_PROTECTIVE, generate_from_profile
from charlite.experience.pipeline import GenerateOptions, Generator


@click.command()
@click.argument("name", shell_complete=complete_character)
@click.option(
    "--teacher",
    cls=SettingOption,
    setting="teacher",
    shell_complete=complete_model_spec,
    metavar="SPEC",
    help="embedded, gguf:PATH, a pulled model's name, ollama:TAG or openai:MODEL@URL; or "
    "'profile': no model, first-person exchanges made of the profile's own sentences.",
)
@click.option(
    "--scenes",
    type=click.IntRange(0, 1000),
    default=1,
    show_default=True,
    help="Scenes per profile paragraph.",
)
@click.option(
    "--protective",
    type=click.IntRange(0, 10000),
    default=1,
    show_default=True,
    help="Protective experiences (things the character cannot know).",
)
@click.option(
    "--paragraphs",
    type=click.IntRange(1, None),
    help="Use only the first N profile paragraphs (default: all).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Parallel requests to an HTTP teacher; sequences decoded together by a local one.",
)
@click.option(
    "--dataset",
    shell_complete=complete_dataset,
    default="default",
    show_default=True,
    help="The dataset to write (or resume).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the record ids and of sampling."
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 20),
    default=3,
    show_default=True,
    help="Teacher calls per record before it counts as failed.",
)
@click.option(
    "--threads",
    cls=SettingOption,
    setting="threads",
    type=click.IntRange(1, 256),
    help="CPU threads of a local teacher (default: all cores but one).",
)
@click.option(
    "--coverage",
    type=click.IntRange(0, 100),
    default=0,
    show_default=True,
    help="A coverage stage: at least N experiences that answer each of the profile's fact "
    "probes (a real teacher only).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(
    name,
    teacher,
    scenes,
    protective,
    paragraphs,
    workers,
    dataset,
    seed,
    max_attempts,
    threads,
    coverage,
    quiet,
):
    """Build NAME's training data: scenes, experiences and protective experiences.

    Rerunning the same command resumes: finished records are kept and only what is missing
    is generated.
    """

    if teacher is None or teacher.strip() != "profile":
        teacher = settings.value("teacher", teacher)
    threads = settings.value("threads", threads)
    profile = registry.get_profile(name)
    if teacher == "profile":
        source = click.get_current_context().get_parameter_source("protective")
        given = source is not None and source.name != "DEFAULT"
        result = generate_from_profile(
            profile, dataset, protective if given else DEFAULT_PROTECTIVE, paragraphs
        )
        for note in result.notes:
            warn(note)
        _summary(result, quiet)
        return
    options = GenerateOptions(
        teacher=teacher,
        scenes=scenes,
        protective=protective,
        paragraphs=paragraphs,
        workers=workers,
        dataset=dataset,
        seed=seed,
        max_attempts=max_attempts,
        threads=threads,
        coverage=coverage,
    )
    reporter = None if quiet else RichGenerationReporter()
    result = Generator(profile, options, reporter).run()
    for note in result.notes:
        warn(note)
    for name_ in result.repaired:
        warn(f"dropped a torn last line from {name_} (left by an interrupted run)")
    _summary(result, quiet)


def _summary(result, quiet: bool) -> None:
    out = console()
    c, e = result.counts, result.expected
    new = sum(result.new.values())
    parts = ", ".join(
        f"{c.get(s, 0)}/{e.get(s, 0)} {s}" for s in ("scenes", "experiences", "protective")
    )
    out.print(f"{result.dataset}: {parts} ({new} new in {result.seconds:.0f} s)")
    if result.failures:
        reasons = ", ".join(f"{k} {v}" for k, v in result.failures.items())
        out.print(f"failed attempts: {reasons}")
    if not result.complete:
        failed = sum(result.failed_tasks.values())
        out.print(
            f"incomplete: {failed} records failed every attempt; rerun the same command to try them again"
        )
    if not quiet:
        out.print(f"-> {result.path}")


class RichGenerationReporter:
    """A rich progress bar on stderr: done, failed and the time left."""

    def __init__(self) -> None:
        self.progress = bars.Progress(
            bars.TextColumn("{task.description:<12}"),
            bars.BarColumn(),
            bars.MofNCompleteColumn(),
            bars.TextColumn("failed {task.fields[failed]} (attempts {task.fields[attempts]})"),
            bars.TimeElapsedColumn(),
            bars.TextColumn("left"),
            bars.TimeRemainingColumn(),
            console=console(stderr=True),
            transient=False,
        )
        self.task = None
        self.failed = 0
        self.attempts = 0

    def start(self, total: int, done: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            "generating", total=total, completed=done, failed=0, attempts=0
        )

    def stage(self, stage: str, total: int, done: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=stage)

    def advance(self, stage: str, ok: bool, failed_attempts: int = 0) -> None:
        """One record done (``ok``) or given up, after ``failed_attempts`` rejected replies."""
        if self.task is None:
            return
        self.attempts += failed_attempts
        if ok:
            self.progress.advance(self.task)
        else:
            self.failed += 1
        self.progress.update(self.task, failed=self.failed, attempts=self.attempts)

    def finish(self) -> None:
        self.progress.stop()

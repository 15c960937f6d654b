"""``charlite train NAME``: fine-tune a character as a LoRA adapter.

The flags are the fields of :class:`charlite.train.config.TrainConfig`, help text included;
``--config FILE`` sets the same fields from YAML and flags override it.
"""

from __future__ import annotations

import types
import typing
import warnings
from typing import Any

import click
import yaml

from charlite.cli.complete import complete_character
from charlite.cli.output import console, verbose
from charlite.errors import TrainingError
from charlite.train import load_run
from charlite.train import train as train_character
from charlite.train.config import TrainConfig, read_config_file
from charlite.train.engines import detect_device
from charlite.train.progress import RichTrainingReporter

_SHOWN_DEFAULTS = {"base", "engine", "dataset", "epochs", "rank", "alpha", "dropout", "seed"}


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a field's annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in args]), False
    if annotation is bool:
        return bool, True
    return {int: click.INT, float: click.FLOAT}.get(annotation, click.STRING), False


def config_options(func):
    """One option per TrainConfig field; each defaults to None, meaning 'not given'."""
    for name, field in reversed(list(TrainConfig.model_fields.items())):
        flag = name.replace("_", "-")
        kind, is_flag = _click_type(field.annotation)
        help_text = field.description or ""
        if name in _SHOWN_DEFAULTS and field.default is not None:
            help_text += f" [default: {field.default}]"
        if is_flag:
            option = click.option(f"--{flag}/--no-{flag}", name, default=None, help=help_text)
        else:
            metavar = "X" if kind is click.FLOAT else ("N" if kind is click.INT else None)
            option = click.option(
                f"--{flag}", name, type=kind, default=None, help=help_text, metavar=metavar
            )
        func = option(func)
    return func


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", shell_complete=complete_character)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML file of settings (the flags' names); flags override it.",
)
@click.option("--run", "run_id", metavar="ID", help="Name of the run folder (default: date-time).")
@click.option(
    "--resume",
    metavar="RUN",
    help="Continue an interrupted run from its last checkpoint, with its own settings.",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the settings this run would use (YAML, for --config) and exit.",
)
@config_options
def train(
    name: str,
    config_file: str | None,
    run_id: str | None,
    resume: str | None,
    print_config: bool,
    **flags,
):
    """Fine-tune character NAME as a LoRA adapter on its experiences.

    Unsloth on a CUDA GPU, transformers + peft elsewhere; for several GPUs run it under
    'accelerate launch -m charlite train NAME --run ID'. Ctrl-C saves a checkpoint;
    --resume RUN continues from it.
    """
    if not verbose():
        warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes
    config = _config(config_file, run_id, resume, {k: v for k, v in flags.items() if v is not None})
    if print_config:
        if config is None:
            config = TrainConfig(**load_run(name, resume).manifest["config"])
        _print_config(config)
        return
    run = train_character(
        name, config, run_id=run_id, resume=resume, reporter=RichTrainingReporter()
    )
    _report(run)


def _config(config_file, run_id, resume, given: dict[str, Any]) -> TrainConfig | None:
    """The run's settings from --config and the flags (``None`` with --resume: the run's own)."""
    if not resume:
        file_values = read_config_file(config_file) if config_file else {}
        return TrainConfig.from_sources(file_values, given)
    extra = [f"--{k.replace('_', '-')}" for k in given]
    extra += ["--config"] if config_file else []
    extra += ["--run"] if run_id else []
    if extra:
        raise TrainingError(
            f"--resume continues run '{resume}' with its own settings; "
            f"leave out {', '.join(extra)}",
            hint="start a new run to change them",
        )
    return None


def _print_config(config: TrainConfig) -> None:
    settings = config.resolved(detect_device()).model_dump(mode="json")
    click.echo(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), nl=False)


def _report(run) -> None:
    m = run.manifest
    tokens = m.get("tokens") or {}
    seconds = float(m.get("train_time_s") or 0.0)
    rate = tokens.get("real", 0) / seconds if seconds else 0.0
    out = console()
    out.print(f"trained {run.slug}: run {run.run_id} ({m.get('engine')} on {m.get('device')})")
    loss = m.get("final_loss")
    out.print(
        f"  steps {m['steps']['done']}, final loss {loss:.4f}"
        if isinstance(loss, float)
        else f"  steps {m['steps']['done']}"
    )
    out.print(
        f"  {tokens.get('real', 0)} tokens in {seconds:.1f}s ({rate:.0f} tokens/s), "
        f"padding {100 * float(tokens.get('padding_share', 0.0)):.1f}%, "
        f"wall time {float(m.get('wall_time_s') or 0):.1f}s"
    )
    out.print(f"  adapter: {run.adapter_dir}")
    out.print(f"next: charlite export {run.slug} --run {run.run_id}")

"""charlite interview NAME: ask a character a question set, single- or multi-turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from charlite import characters, settings
from charlite.backends import get_backend
from charlite.cli.complete import complete_character, complete_model_spec
from charlite.cli.output import console, progress_bar, verbose
from charlite.cli.settings_option import SettingOption
from charlite.errors import InterruptedByUser
from charlite.eval import interview as iv
from charlite.eval.question_bank import fact_questions, questions_for
from charlite.files import read_json
from charlite.knowledge import default_knowledge_mode, use_knowledge
from charlite.voices import resolve_model


@click.command()
@click.argument("name", shell_complete=complete_character)
@click.option(
    "--model",
    "model",
    cls=SettingOption,
    setting="model",
    shell_complete=complete_model_spec,
    metavar="SPEC",
    help="embedded, gguf:PATH, a pulled model's name, ollama:TAG, openai:MODEL@URL (default: the newest export, else this, prompted).",
)
@click.option(
    "--prompted",
    is_flag=True,
    help="Use the base model with the profile in the prompt, even if a trained export exists.",
)
@click.option(
    "--questions",
    "questions_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A question file in the paper's format (default: the character's bundled set).",
)
@click.option(
    "--turns",
    type=click.IntRange(0, 50),
    default=0,
    show_default=True,
    help="Follow-up questions per conversation (0: single-turn).",
)
@click.option(
    "--interviewer",
    "interviewer_spec",
    cls=SettingOption,
    setting="interviewer",
    shell_complete=complete_model_spec,
    metavar="SPEC",
    help="Model that asks the follow-ups (default: the interviewee's).",
)
@click.option(
    "--reask-every",
    type=click.IntRange(0, 50),
    default=3,
    show_default=True,
    help="Multi-turn: every N follow-ups, ask an earlier question again (0: never).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Ask only the first N questions (and the first N fact probes).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results file; an existing one is continued.",
)
@click.option(
    "--facts/--no-facts",
    default=True,
    show_default=True,
    help="Also ask the profile's fact probes (single-turn).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Sampling seed (each question gets its own, derived from it).",
)
@click.option("--temperature", type=float, help="Sampling temperature (default 0.7).")
@click.option(
    "--max-tokens", type=click.IntRange(8, 4096), help="Longest reply in tokens (default 200)."
)
@click.option("--show", is_flag=True, help="Print each new question and the words said aloud.")
@click.option(
    "--knowledge",
    type=click.Choice(["auto", "always", "off"]),
    help="Recall profile paragraphs into each question (single-turn; default: auto, or "
    "CHARLITE_KNOWLEDGE).",
)
def interview(
    name,
    model,
    prompted,
    questions_file,
    turns,
    interviewer_spec,
    reask_every,
    limit,
    output,
    facts,
    seed,
    temperature,
    max_tokens,
    show,
    knowledge,
):
    """Interview a character with a question set and write a results file for 'charlite eval'."""
    profile = characters.get_profile(name)
    knowledge = knowledge or default_knowledge_mode()
    params = iv.INTERVIEW_PARAMS.with_(seed=seed, temperature=temperature, max_tokens=max_tokens)
    plan = _plan(profile, questions_file, facts, turns, limit, params)
    resolved = resolve_model(profile, model, prompted)
    output = output or iv.default_output(profile.slug, turns)
    backend = resolved.backend(verbose=verbose())
    model_info = {
        "spec": str(resolved.spec),
        "label": resolved.label,
        "prompted": resolved.prompted,
        "artifact": iv.artifact_of(resolved, backend),
        "knowledge": use_knowledge(knowledge, profile, resolved),
    }
    interviewer = interviewer_info = None
    if turns:
        interviewer, interviewer_info = _interviewer(
            interviewer_spec, resolved, backend, plan, reask_every
        )
    _header(plan, resolved.label)
    try:
        with progress_bar("interview") as progress:
            data, new = iv.run_interview(
                plan,
                backend,
                output,
                model=model_info,
                prompted=resolved.prompted,
                interviewer=interviewer,
                interviewer_info=interviewer_info,
                progress=progress,
                knowledge=model_info["knowledge"],
            )
    except KeyboardInterrupt:
        kept = _count(output)
        raise InterruptedByUser(
            f"interrupted: {kept} finished answers are kept in {output}",
            hint="rerun the same command (same -o) to continue",
        ) from None
    if show:
        _show(data, new, profile.short_name)
    _summary(data, new, len(plan.questions), output)


def _plan(profile, questions_file, facts: bool, turns: int, limit, params) -> iv.InterviewPlan:
    questions, source = questions_for(profile.slug, questions_file)
    if facts and not turns:
        questions = questions + fact_questions(profile)
    return iv.InterviewPlan(profile, questions, source, turns=turns, limit=limit, params=params)


def _header(plan: iv.InterviewPlan, label: str) -> None:
    kind = f"multi-turn ({plan.turns} follow-ups)" if plan.turns else "single-turn"
    console(stderr=True).print(
        f"[bold]{plan.profile.name}[/bold] · {label} · {kind} · {plan.questions_source}"
    )


def _interviewer(interviewer_spec, resolved, backend, plan, reask_every):
    """The model that asks the follow-ups (the interviewee's own unless another is named)."""
    interviewer_spec = settings.value("interviewer", interviewer_spec)
    if interviewer_spec and interviewer_spec.strip() != str(resolved.spec):
        ibackend = get_backend(interviewer_spec, verbose=verbose())
        spec, label = str(ibackend.spec), ibackend.describe()
    else:
        ibackend = backend
        spec, label = str(resolved.spec), "same as the interviewee"
    info = {"spec": spec, "label": label, "reask_every": reask_every}
    return iv.Interviewer(ibackend, plan.profile, plan.questions, reask_every=reask_every), info


def _show(data: dict[str, Any], new: list[int], short_name: str) -> None:
    """Each new question and the words said aloud."""
    out = console()
    for item in (it for it in data["items"] if it["index"] in new):
        for ex in item.get("exchanges") or [item]:
            out.print(f"Man: {ex['question']}", markup=False, highlight=False)
            said = ex.get("speaking") or "(nothing said)"
            out.print(f"{short_name}: {said}", markup=False, highlight=False)


def _summary(data: dict[str, Any], new: list[int], planned: int, output: Path) -> None:
    t = data["timings"]
    status = "complete" if data["complete"] else f"{t['answers']} of {planned} questions"
    console().print(
        f"{t['answers']} answers ({len(new)} new, {status}) in {t['total_seconds']:.1f} s → {output}",
        highlight=False,
        soft_wrap=True,
    )


def _count(path: Path) -> int:
    try:
        return len(read_json(path).get("items") or [])
    except Exception:  # noqa: BLE001 - only for the message
        return 0

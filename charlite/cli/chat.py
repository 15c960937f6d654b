"""charlite chat NAME: interactive, one message (-m), or one message per input line."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import click

from charlite import characters as registry
from charlite import roleplay, settings
from charlite.backends.base import CHAT_PARAMS
from charlite.chat import ChatSession, switch_character
from charlite.cli.complete import complete_character, complete_model_spec
from charlite.cli.output import console, verbose
from charlite.cli.settings_option import SettingOption
from charlite.errors import CharliteError
from charlite.history import History, history_exists
from charlite.home import charlite_home, check_name, ensure_dir
from charlite.knowledge import default_knowledge_mode, use_knowledge
from charlite.profile import Scene
from charlite.voices import resolve_model

SLASH_HELP = """\
/help                       this help
/reset                      start a new session (same character and scene)
/scene LOCATION | STATUS    change the scene
/thoughts                   show or hide the character's thoughts
/history                    the turns of this session
/switch NAME                talk to another character (swaps the adapter when the base is shared)
/exit                       leave (Ctrl-D works too)"""


@click.command()
@click.argument("name", shell_complete=complete_character)
@click.option("-m", "--message", help="Answer this one message, print the reply and exit.")
@click.option(
    "--model",
    "model",
    cls=SettingOption,
    setting="model",
    metavar="SPEC",
    shell_complete=complete_model_spec,
    help="embedded, gguf:PATH, a pulled model's name, ollama:TAG, openai:MODEL@URL "
    "(default: the newest export, else this, prompted).",
)
@click.option(
    "--prompted",
    is_flag=True,
    help="Use the base model with the profile in the prompt, even if a trained export exists.",
)
@click.option(
    "--session",
    "session_id",
    metavar="ID",
    help="Continue this session, or start one with this name if none exists.",
)
@click.option(
    "-c", "--continue", "continue_", is_flag=True, help="Continue the character's latest session."
)
@click.option("--location", help="Where the scene takes place.")
@click.option("--status", help="What is going on in the scene.")
@click.option(
    "--show-thoughts", is_flag=True, help="Show the character's (thinking) lines, dimmed."
)
@click.option("--seed", type=int, help="Sampling seed, for repeatable replies.")
@click.option(
    "--temperature",
    cls=SettingOption,
    setting="temperature",
    type=float,
    help="Sampling temperature.",
)
@click.option(
    "--max-tokens",
    cls=SettingOption,
    setting="max-tokens",
    type=int,
    help="Longest reply in tokens.",
)
@click.option(
    "--context", cls=SettingOption, setting="context", type=int, help="Context size in tokens."
)
@click.option(
    "--trim/--no-trim",
    default=True,
    show_default=True,
    help="Trim a reply cut by --max-tokens to its last full sentence (--no-trim: keep it raw).",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not print the session id on stderr.")
@click.option(
    "--knowledge",
    cls=SettingOption,
    setting="knowledge",
    type=click.Choice(["auto", "always", "off"]),
    help="Recall profile paragraphs into each turn.",
)
def chat(
    name,
    message,
    model,
    prompted,
    session_id,
    continue_,
    location,
    status,
    show_thoughts,
    seed,
    temperature,
    max_tokens,
    context,
    trim,
    quiet,
    knowledge,
):
    """Talk with a character (default: its newest export, else the default model prompted).

    With -m or standard input, the session id goes to stderr ("session: ID"), so a script can
    continue the conversation with --session ID or -c.
    """
    if session_id is not None and continue_:
        raise CharliteError("use --session ID or --continue, not both")
    if session_id is not None:
        check_name(session_id, "session name")
    temperature = settings.value("temperature", temperature)
    max_tokens = settings.value("max-tokens", max_tokens)
    context = settings.value("context", context)
    profile = registry.get_profile(name)
    knowledge = knowledge or default_knowledge_mode()  # a bad CHARLITE_KNOWLEDGE fails here
    scene = _scene(profile, location, status)
    resolved = resolve_model(profile, model, prompted)
    # Check the session, then load the model, and only then create the history file: a chat
    # that fails on its input leaves nothing behind.
    ensure_dir(charlite_home())  # an unusable CHARLITE_HOME fails before the model loads
    existing = _existing_session(profile.slug, session_id, continue_)
    backend = resolved.backend(verbose=verbose(), n_ctx=context)
    params = CHAT_PARAMS.with_(seed=seed, temperature=temperature, max_tokens=max_tokens)
    history = History()
    session = ChatSession(
        profile,
        backend,
        prompted=resolved.prompted,
        history=history,
        session_id=existing.id if existing else None,
        new_session_id=session_id if existing is None else None,
        scene=scene,
        params=params,
        model_label=resolved.label,
        trim=trim,
        knowledge=use_knowledge(knowledge, profile, resolved),
    )
    if message is None and sys.stdin.isatty():
        _interactive(session, show_thoughts)
    else:
        lines = [message] if message is not None else (line.strip() for line in sys.stdin)
        _answer_lines(session, lines, show_thoughts, announce=not quiet)
    history.close()


def _scene(profile, location: str | None, status: str | None) -> Scene | None:
    """The scene --location/--status set (the profile's default fills in the other)."""
    if not (location or status):
        return None
    base = profile.default_scene
    return Scene(location=location or base.location, status=status or base.status)


def _existing_session(slug: str, session_id: str | None, continue_: bool):
    """The stored session to continue (``--session ID`` or ``-c``), if there is one; read
    without creating the history file."""
    if not history_exists():
        return None
    with History() as peek:
        if session_id is not None:
            existing = peek.find(session_id)
            if existing is not None and existing.character != slug:
                raise CharliteError(
                    f"session '{session_id}' is a chat with '{existing.character}', not '{slug}'"
                )
            return existing
        return peek.latest(slug) if continue_ else None


def _answer_lines(session, lines: Iterable[str], show_thoughts: bool, announce: bool) -> None:
    """One reply per non-blank line; the session line follows the first reply, so a chat
    that fails prints only its error."""
    for line in lines:
        if line.strip():
            _answer(session, line, show_thoughts)
            if announce:
                click.echo(f"session: {session.session_id}", err=True)
                announce = False
    if announce:
        click.echo(f"session: {session.session_id}", err=True)


def _answer(session, text: str, show_thoughts: bool) -> None:
    reply = session.reply(text)
    if show_thoughts:
        thoughts = roleplay.thoughts(reply, session.profile.short_name)
        if thoughts:
            click.echo(f"({thoughts})")
    click.echo(session.spoken(reply))


def _interactive(session, show_thoughts: bool) -> None:
    out = console()
    p = session.profile
    out.print(
        f"[bold]{p.name}[/bold] · model: {session.model_label} · session {session.session_id}"
    )
    out.print(f"[dim]{session.scene.location} — {session.scene.status}[/dim]")
    out.print("[dim]/help for commands, Ctrl-D to leave[/dim]")
    while True:
        try:
            text = out.input("[bold cyan]you>[/bold cyan] ").strip()
        except EOFError:
            out.print()
            return
        except KeyboardInterrupt:
            out.print()
            continue
        if not text:
            continue
        if text.startswith("/"):
            try:
                result = _slash(session, text, out)
                if result == "exit":
                    return
                if result is not None:
                    session = result
                    p = session.profile
            except CharliteError as exc:
                out.print(f"[red]{exc}[/red]")
            if text.strip() == "/thoughts":
                show_thoughts = not show_thoughts
                out.print(f"[dim]thoughts {'shown' if show_thoughts else 'hidden'}[/dim]")
            continue
        stream = None
        pending = ""
        try:  # a Ctrl-C from the moment the label shows stops this reply, never the session
            out.print(f"[bold magenta]{p.short_name}>[/bold magenta] ", end="")
            stream = session.stream(text)
            printed = 0  # characters of the reply already printed (whole lines)
            for delta in stream:
                pending += delta.text
                # print complete lines as they come, each styled by its marker
                while "\n" in pending:
                    line, pending = pending.split("\n", 1)
                    _print_line(out, line, show_thoughts, p.short_name)
                    printed += len(line) + 1
                    out.print("   ", end="")
            if session.last_cut and session.trim:
                # cut by the token limit: the last line ends at the reply's last full sentence
                pending = session.last_reply[printed:]
            _print_line(out, pending, show_thoughts, p.short_name)
        except KeyboardInterrupt:
            if stream is not None:
                stream.close()
            out.print(" [dim](interrupted)[/dim]")


def _print_line(out, line: str, show_thoughts: bool, name: str) -> None:
    parts = roleplay.parse_reply(line, name)
    if not parts:
        out.print()
        return
    for part in parts:
        if part.action == "thinking":
            if show_thoughts:
                out.print(f"[dim italic]({part.content.strip()})[/dim italic]")
            else:
                out.print("", end="")
        else:
            out.print(part.content.strip(), markup=False, highlight=False)


def _slash(session, text: str, out):
    cmd, _, arg = text.partition(" ")
    cmd = cmd.lower()
    if cmd in ("/exit", "/quit"):
        return "exit"
    if cmd == "/help":
        out.print(SLASH_HELP, markup=False)
    elif cmd == "/reset":
        session.reset()
        out.print(f"[dim]new session {session.session_id}[/dim]")
    elif cmd == "/scene":
        location, sep, status = arg.partition("|")
        if not sep or not location.strip() or not status.strip():
            raise CharliteError("usage: /scene LOCATION | STATUS")
        session.set_scene(location.strip(), status.strip())
        out.print(f"[dim]scene: {location.strip()} — {status.strip()}[/dim]")
    elif cmd == "/history":
        for turn in session.turns:
            out.print(f"[bold]{turn.role}:[/bold] ", end="")
            out.print(turn.content, markup=False)
    elif cmd == "/thoughts":
        pass
    elif cmd == "/switch":
        if not arg.strip():
            raise CharliteError("usage: /switch NAME")
        new, how = switch_character(session, arg.strip(), verbose=verbose())
        note = "adapter swapped on the loaded model" if how == "swapped" else "model reloaded"
        out.print(f"[dim]now talking to {new.profile.name} · {new.model_label} · {note}[/dim]")
        return new
    else:
        raise CharliteError(f"unknown command {cmd}; /help lists them")
    return None

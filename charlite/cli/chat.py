"""charlite chat NAME: interactive, one message (-m), or one message per input line."""

from __future__ import annotations

import sys

import click

from charlite import characters as registry
from charlite.cli.complete import complete_character, complete_model_spec
from charlite.cli.output import console, verbose
from charlite.errors import CharliteError

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
    metavar="SPEC",
    shell_complete=complete_model_spec,
    help="embedded, gguf:PATH, ollama:TAG, openai:MODEL@URL.",
)
@click.option(
    "--prompted",
    is_flag=True,
    help="Use the base model with the profile in the prompt, even if a trained export exists.",
)
@click.option("--session", "session_id", metavar="ID", help="Continue an earlier session.")
@click.option("--location", help="Where the scene takes place.")
@click.option("--status", help="What is going on in the scene.")
@click.option(
    "--show-thoughts", is_flag=True, help="Show the character's (thinking) lines, dimmed."
)
@click.option("--seed", type=int, help="Sampling seed, for repeatable replies.")
@click.option("--temperature", type=float, help="Sampling temperature (default 0.7).")
@click.option("--max-tokens", type=int, help="Longest reply in tokens (default 200).")
@click.option(
    "--knowledge",
    type=click.Choice(["auto", "always", "off"]),
    help="Recall profile paragraphs into each turn (default: auto, or CHARLITE_KNOWLEDGE).",
)
def chat(
    name,
    message,
    model,
    prompted,
    session_id,
    location,
    status,
    show_thoughts,
    seed,
    temperature,
    max_tokens,
    knowledge,
):
    """Talk with a character (default: the embedded model, prompted with the profile)."""
    from charlite.chat import CHAT_PARAMS, ChatSession, resolve_model
    from charlite.history import History
    from charlite.knowledge import default_knowledge_mode, use_knowledge
    from charlite.profile import Scene

    profile = registry.get_profile(name)
    knowledge = knowledge or default_knowledge_mode()  # a bad CHARLITE_KNOWLEDGE fails here
    scene = None
    if location or status:
        base = profile.default_scene
        scene = Scene(location=location or base.location, status=status or base.status)
    resolved = resolve_model(profile, model, prompted)
    history = History()
    if session_id:
        history.session(session_id)  # an unknown session fails before the model loads
    backend = resolved.backend(verbose=verbose())
    params = CHAT_PARAMS.with_(seed=seed, temperature=temperature, max_tokens=max_tokens)
    session = ChatSession(
        profile,
        backend,
        prompted=resolved.prompted,
        history=history,
        session_id=session_id,
        scene=scene,
        params=params,
        model_label=resolved.label,
        knowledge=use_knowledge(knowledge, profile, resolved),
    )
    if message is not None:
        _answer(session, message, show_thoughts)
    elif sys.stdin.isatty():
        _interactive(session, show_thoughts)
    else:
        for line in sys.stdin:
            if line.strip():
                _answer(session, line.strip(), show_thoughts)
    history.close()


def _answer(session, text: str, show_thoughts: bool) -> None:
    from charlite import roleplay

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
            for delta in stream:
                pending += delta.text
                # print complete lines as they come, each styled by its marker
                while "\n" in pending:
                    line, pending = pending.split("\n", 1)
                    _print_line(out, line, show_thoughts, p.short_name)
                    out.print("   ", end="")
            _print_line(out, pending, show_thoughts, p.short_name)
        except KeyboardInterrupt:
            if stream is not None:
                stream.close()
            out.print(" [dim](interrupted)[/dim]")


def _print_line(out, line: str, show_thoughts: bool, name: str) -> None:
    from charlite import roleplay

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
        from charlite.chat import switch_character

        if not arg.strip():
            raise CharliteError("usage: /switch NAME")
        new, how = switch_character(session, arg.strip(), verbose=verbose())
        note = "adapter swapped on the loaded model" if how == "swapped" else "model reloaded"
        out.print(f"[dim]now talking to {new.profile.name} · {new.model_label} · {note}[/dim]")
        return new
    else:
        raise CharliteError(f"unknown command {cmd}; /help lists them")
    return None

"""charlite serve [--host 127.0.0.1] [--port 8000] [--api-key KEY]: every character as a model."""

from __future__ import annotations

import os

import click

from charlite import characters as registry
from charlite.cli.output import console, verbose, warn
from charlite.serve.server import _require_serve_extra, bind, is_loopback, run
from charlite.spec import parse_spec


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (loopback by default).",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free port).",
)
@click.option(
    "--api-key", envvar="CHARLITE_API_KEY", metavar="KEY",
    help="Require 'Authorization: Bearer KEY' on every request (also $CHARLITE_API_KEY).",
)  # fmt: skip
@click.option(
    "--model",
    "model",
    metavar="SPEC",
    help="Voice every character with this model (default: each one's export, else embedded).",
)
@click.option(
    "--prompted",
    is_flag=True,
    help="Use the base model with the profile in the prompt, even where a trained export exists.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    metavar="N",
    help="Sequences a local model decodes together (default: $CHARLITE_PARALLEL, else from "
    "the context size and memory; see charlite doctor).",
)
def serve(
    host: str,
    port: int,
    api_key: str | None,
    model: str | None,
    prompted: bool,
    parallel: int | None,
) -> None:
    """Serve the characters over an OpenAI-compatible API (GET /v1/models, POST /v1/chat/completions)."""
    _require_serve_extra()
    # the app imports FastAPI, which the serve extra brings: only once it is known to be there
    from charlite.serve.app import check_api_key, create_app

    if api_key is None and "CHARLITE_API_KEY" in os.environ:
        api_key = os.environ["CHARLITE_API_KEY"]  # set but empty: refused below, not ignored
    if api_key is not None:
        api_key = check_api_key(api_key)
    if model:
        parse_spec(model)  # a bad spec fails now, not on the first request

    app = create_app(api_key=api_key, model=model, prompted=prompted, parallel=parallel)
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if not is_loopback(host) and not api_key:
        warn(f"listening on {host} without --api-key: anyone who can reach this machine can use it")
    out = console()
    count = len(registry.character_refs())
    out.print(f"charlite serve: [bold]http://{shown}:{bound_port}/v1[/bold] ({count} characters)")
    out.print(
        f"  models: GET /v1/models · chat: POST /v1/chat/completions with model=SLUG"
        f"{' · API key required' if api_key else ''}"
    )
    out.print("  Ctrl-C to stop")
    run(app, sock, verbose=verbose())

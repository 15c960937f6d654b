"""Shell completion callbacks (click's ``shell_complete``): characters, datasets, runs, specs.

Enable completion in a shell with::

    eval "$(_CHARLITE_COMPLETE=bash_source charlite)"    # bash, in ~/.bashrc
    eval "$(_CHARLITE_COMPLETE=zsh_source charlite)"     # zsh, in ~/.zshrc
    _CHARLITE_COMPLETE=fish_source charlite | source     # fish

Each callback reads only the folder listing of CHARLITE_HOME and the bundled profiles (no
profile is parsed, no model library imported), so a TAB answers at once. A callback never
raises: a broken home folder completes nothing.

Datasets and runs belong to a character: the callbacks look for it in the command's ``name``
parameter (the ``NAME`` argument of ``generate``, ``train``, ``export``...).
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from charlite.characters import character_refs
from charlite.home import CharacterPaths

SPEC_PREFIXES = ("embedded", "gguf:", "ollama:", "openai:", "hf:")


def _character_of(ctx: click.Context) -> str | None:
    """The character the command line names: its ``name`` parameter, or (when click could not
    parse the line because an option still waits for its value) the first leftover word that is
    a character's slug."""
    node: click.Context | None = ctx
    while node is not None:
        name = node.params.get("name")
        if isinstance(name, str) and name:
            return name
        node = node.parent
    words = [w for w in (*getattr(ctx, "_protected_args", ()), *ctx.args) if not w.startswith("-")]
    if not words:
        return None
    try:
        refs = character_refs()
    except Exception:
        return None
    return next((w for w in words if w.lower() in refs), None)


def complete_character(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Character slugs, bundled and user, that start with what was typed."""
    try:
        refs = character_refs()
    except Exception:
        return []
    prefix = incomplete.lower()
    return [
        CompletionItem(slug, help="bundled" if ref.bundled else "user")
        for slug, ref in refs.items()
        if slug.startswith(prefix)
    ]


def _listing(ctx: click.Context, what: str, incomplete: str) -> list[CompletionItem]:
    name = _character_of(ctx)
    if not name:
        return []
    try:
        paths = CharacterPaths.of(name.strip().lower())
        items = getattr(paths, what)()
    except Exception:
        return []
    return [CompletionItem(item) for item in items if item.startswith(incomplete)]


def complete_dataset(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The datasets of the character named in the command (``characters/SLUG/data/*``)."""
    return _listing(ctx, "datasets", incomplete)


def complete_run(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The training runs of the character named in the command (``characters/SLUG/runs/*``)."""
    return _listing(ctx, "runs", incomplete)


def complete_export(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The exported runs of the character named in the command (``characters/SLUG/exports/*``)."""
    return _listing(ctx, "exports", incomplete)


def complete_model_spec(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Model spec prefixes (``embedded``, ``gguf:``, ``ollama:``...); after ``gguf:``, files."""
    if incomplete.startswith("gguf:"):
        return [CompletionItem(incomplete, type="file")]
    return [
        CompletionItem(p, help="the bundled model" if p == "embedded" else None)
        for p in SPEC_PREFIXES
        if p.startswith(incomplete)
    ]

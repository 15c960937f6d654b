"""The README and docs/ name only commands and flags that exist, and keep no machine's paths.

Every ``charlite COMMAND [SUBCOMMAND] ... --flag`` in a code block or an inline code span is
checked against the click commands themselves (nothing is run).
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from charlite.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SPAN = re.compile(r"`([^`]+)`")
_CALL = re.compile(r"(?<![\w./-])charlite ([a-z][a-z-]*)\b(.*)")
_FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][a-zA-Z0-9-]*)")
_END = re.compile(r" \| | && |; | # |\)$")
"""Where a command line ends: a pipe to another program, ``&&``, ``;``, a shell comment."""
_COMMAND_LINE = re.compile(r"^\s*(\$ )?([A-Z_]+=\S+ )*$|.*(\| |-m )$")
"""What comes before ``charlite`` on a command line: a prompt, variables, a pipe, ``python -m``."""


def code_lines(text: str) -> list[str]:
    """The lines of code blocks, and every inline code span (joined onto one line)."""
    lines = [ln for block in _FENCE.findall(text) for ln in block.splitlines()]
    prose = _FENCE.sub("", text)
    lines += [" ".join(span.split()) for span in _SPAN.findall(prose)]
    return lines


def _command(name: str) -> click.Command | None:
    ctx = click.Context(cli)
    return cli.get_command(ctx, name)


def _options(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}


def _calls(text: str) -> list[tuple[str, str]]:
    """(line, problem) for each command or flag that does not exist."""
    problems = []
    for line in code_lines(text):
        line = line.replace("\\|", "|")  # a table cell's escaped pipe
        for m in _CALL.finditer(line):
            name, rest = m.group(1), m.group(2)
            rest = _END.split(rest, maxsplit=1)[0]
            rest = rest.split(" charlite ", 1)[0]  # the next call is checked on its own
            command = _command(name)
            if command is None:
                if _COMMAND_LINE.match(line[: m.start()]):  # not prose in pasted output
                    problems.append((line, f"no command 'charlite {name}'"))
                continue
            if isinstance(command, click.Group):
                words = rest.split()
                subs = words[0].split("|") if words else []
                for sub in subs:
                    if sub not in command.commands:
                        problems.append((line, f"no command 'charlite {name} {sub}'"))
                options = (
                    set().union(
                        *(_options(command.commands[s]) for s in subs if s in command.commands)
                    )
                    if subs
                    else _options(command)
                )
            else:
                options = _options(command)
            for flag in _FLAG.findall(re.sub(r"\"[^\"]*\"|'[^']*'", "", rest)):
                if flag not in options:
                    problems.append((line, f"'charlite {name}' has no option {flag}"))
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_name_only_commands_and_flags_that_exist(path):
    problems = _calls(path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(f"{why}: {line}" for line, why in problems)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_paste_no_machine_paths(path):
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"(?:/home/|/Users/|/tmp/|/work/|/root/)[\w./-]*", text)
    assert not found, f"one machine's paths in {path.name}: {found}"


def test_the_checker_finds_a_missing_flag_and_command():
    text = "Run `charlite chat beethoven --nope` or\n```console\n$ charlite fly\n```\n"
    assert [why for _, why in _calls(text)] == [
        "no command 'charlite fly'",
        "'charlite chat' has no option --nope",
    ]


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = _FENCE.search(text).group(1)
    assert "make chat" in first_block and "make test" in first_block
    assert text.index(first_block) < 300
    assert "as fast as" not in text.lower()

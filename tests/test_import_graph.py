"""charlite's modules import each other without cycles, and the ground floor never imports upward.

The graph is read with :mod:`ast` from the source (nothing is imported), and every import counts:
at the top of a file, inside a function, or under ``TYPE_CHECKING``. A cycle hidden inside a
function still ties the modules together; it only fails later, at run time.

Floors (:data:`FLOORS`): the ground floor (models, files, the backends, role-play, profiles,
GGUF) is used by the commands and never uses them; between the parts of charlite (a package such
as ``export`` or a top-level module such as ``chat``) no two import each other, through any path.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "charlite"

FLOORS = (
    (
        "charlite.backends",
        "charlite.cards",
        "charlite.characters",
        "charlite.chat_templates",
        "charlite.errors",
        "charlite.files",
        "charlite.first_person",
        "charlite.gguf",
        "charlite.history",
        "charlite.home",
        "charlite.knowledge",
        "charlite.persona_cache",
        "charlite.profile",
        "charlite.pull",
        "charlite.pulled",
        "charlite.roleplay",
        "charlite.settings",
        "charlite.spec",
        "charlite.trim",
        "charlite.voices",
    ),
    (
        "charlite.chat",
        "charlite.doctor",
        "charlite.eval",
        "charlite.experience",
        "charlite.inventory",
        "charlite.train",
    ),
    ("charlite.export", "charlite.serve"),
    ("charlite.cli", "charlite.__main__"),
)
"""Ground floor first: models, files, backends, role-play, profiles, GGUF, which model voices a
character. Then what builds on them: a chat session, data generation, training, evaluation. Then
export (of a training run) and the API server (of chat sessions). The command line on top. A
module imports from its own floor or below, never from above."""


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package folder)."""
    mods = {}
    for path in root.rglob("*.py"):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's own modules it imports, anywhere in the file."""
    mods = module_files(root)
    top = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # ``from pkg import name`` imports pkg, and pkg.name when that is a module
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name == top or not name.startswith(top + "."):
                    continue
                target = resolve(name)
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path (first node repeated last) per strongly connected group of nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graphs here are small
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, group) for group in groups]


def _closed_path(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first node back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return [*group, start]


def part(module: str) -> str:
    """The part of charlite a module belongs to: ``charlite.export.smoke`` -> ``charlite.export``."""
    return ".".join(module.split(".")[:2])


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


GRAPH = import_graph(ROOT)


def test_the_graph_sees_imports_inside_functions_and_packages():
    # the reader itself: a function-level import, a package import and a module import
    assert "charlite.voices" in GRAPH["charlite.chat"]
    assert "charlite.backends" in GRAPH["charlite.voices"]
    assert "charlite.export.modelfile" in GRAPH["charlite.export.ollama"]
    inner = {t for m, ts in GRAPH.items() if m.startswith("charlite.cli.") for t in ts}
    assert "charlite.export.exporter" in inner  # imported inside the command function


def test_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text("from . import a\n")
    (pkg / "d.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]


def test_no_import_cycle():
    found = cycles(GRAPH)
    assert not found, "import cycles in charlite:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_cycle_between_the_parts_of_charlite():
    # a package and a top-level module never import each other, through any of their modules
    parts: dict[str, set[str]] = {}
    for mod, targets in GRAPH.items():
        parts.setdefault(part(mod), set()).update(part(t) for t in targets if part(t) != part(mod))
    found = cycles(parts)
    assert not found, "parts of charlite import each other:\n" + "\n".join(
        " -> ".join(c) for c in found
    )


def floor(module: str) -> int | None:
    for level, prefixes in enumerate(FLOORS):
        if within(module, prefixes):
            return level
    return None


def test_every_module_is_on_a_floor():
    lost = sorted(m for m in GRAPH if m != "charlite" and floor(m) is None)
    assert not lost, f"modules on no floor (add them to FLOORS in this test): {lost}"


def test_no_upward_import():
    upward = sorted(
        f"{mod} (floor {floor(mod)}) imports {target} (floor {floor(target)})"
        for mod, targets in GRAPH.items()
        if mod != "charlite"
        for target in targets
        if floor(target) is not None and floor(mod) is not None and floor(target) > floor(mod)
    )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_only_the_command_line_imports_the_command_line():
    users = sorted(
        mod
        for mod, targets in GRAPH.items()
        if not within(mod, ("charlite.cli", "charlite.__main__"))
        and any(within(t, ("charlite.cli",)) for t in targets)
    )
    assert not users, f"imports of charlite.cli outside the command line: {users}"

"""`charlite --help`, `characters` and `show` never import the heavy libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "llama_cpp", "peft", "trl", "accelerate", "unsloth")
CHARLITE = Path(sys.executable).parent / "charlite"

PROBE = textwrap.dedent(
    """
    import json, sys
    import charlite.cli
    args = json.loads(sys.argv[1])
    code = 0
    if args is not None:
        try:
            charlite.cli.cli.main(args=args, prog_name="charlite", standalone_mode=False)
        except SystemExit as exc:
            code = exc.code or 0
    print("MODULES=" + json.dumps(sorted(sys.modules)), file=sys.stderr)
    sys.exit(code)
    """
)


def _modules(args, home: Path) -> tuple[list[str], str]:
    env = {**os.environ, "CHARLITE_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stderr.splitlines() if ln.startswith("MODULES="))
    return json.loads(line[len("MODULES=") :]), out.stdout


@pytest.mark.parametrize(
    "args, expect",
    [
        (None, None),
        (["--help"], "Commands"),
        (["characters"], "beethoven"),
        (["show", "beethoven"], "Ludwig van Beethoven"),
        (["chat", "--help"], "--session"),
    ],
    ids=["import", "help", "characters", "show", "chat-help"],
)
def test_no_heavy_imports(args, expect, charlite_home):
    modules, stdout = _modules(args, charlite_home)
    heavy = sorted({m for m in modules if m.split(".")[0] in HEAVY})
    assert heavy == [], f"charlite {args} imported {heavy}"
    if expect:
        assert expect in stdout


def test_console_script_help(charlite_home):
    out = subprocess.run([str(CHARLITE), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ("characters", "show", "add", "chat"):
        assert f"  {name} " in out.stdout
    version = subprocess.run([str(CHARLITE), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "charlite" in version.stdout


def test_python_dash_m(charlite_home):
    out = subprocess.run(
        [sys.executable, "-m", "charlite", "characters"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "socrates" in out.stdout

"""Peak resident memory of `charlite chat beethoven -m ...` on the embedded model.

Compared with a bare llama-cpp-python script answering the same message with the same model.
Goal: charlite's peak <= 400 MB. Prints `memory: RATIO` last (charlite peak / bare peak).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import private_home, report  # noqa: E402

BARE = """
import llama_cpp, sys
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=2048, verbose=False)
out = llm.create_chat_completion([{"role": "user", "content": "Where were you born?"}], max_tokens=32, seed=1)
print(out["choices"][0]["message"]["content"])
"""


def peak_mb(cmd: list[str]) -> float:
    """Peak RSS of one child process, in MB (wait4's rusage is per child)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[:4]} failed")
    return usage.ru_maxrss / 1024


def main() -> None:
    private_home()
    from charlite.spec import embedded_model_path

    py = sys.executable
    model = str(embedded_model_path())
    charlite = peak_mb(
        [
            py,
            "-m",
            "charlite",
            "chat",
            "beethoven",
            "-m",
            "Where were you born?",
            "--max-tokens",
            "32",
            "--seed",
            "1",
        ]
    )
    bare = peak_mb([py, "-c", BARE, model])
    report(
        "memory",
        charlite / bare,
        charlite_peak_mb=charlite,
        bare_llama_cpp_peak_mb=bare,
        goal_mb=400,
    )


if __name__ == "__main__":
    main()

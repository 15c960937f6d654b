"""Start-up: `charlite --help` and `charlite characters` against `python -c pass`.

Neither command may import torch, transformers or llama_cpp. Prints `startup: RATIO` last
(charlite --help wall time / bare interpreter wall time).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import private_home, report  # noqa: E402


def wall(cmd: list[str], reps: int) -> float:
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(reps: int = 7) -> None:
    private_home()
    py = sys.executable
    bare = wall([py, "-c", "pass"], reps)
    helps = wall([py, "-m", "charlite", "--help"], reps)
    chars = wall([py, "-m", "charlite", "characters"], reps)
    report("startup", helps / bare, python_pass_s=bare, help_s=helps, characters_s=chars)


if __name__ == "__main__":
    main()

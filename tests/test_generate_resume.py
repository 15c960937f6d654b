"""kill -9 a real `charlite generate` in the middle of a run, rerun it, and check that the
dataset ends whole: no duplicate, no torn line, every expected record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charlite.experience.dataset import Dataset

pytestmark = pytest.mark.slow

CHARLITE = Path(sys.executable).parent / "charlite"
ARGS = ["generate", "beethoven", "--paragraphs", "2", "--scenes", "1", "--protective", "1",
        "--max-attempts", "6", "--threads", "1", "--quiet"]  # fmt: skip


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


@pytest.mark.timeout(2400)
def test_kill_then_rerun_finishes_the_dataset(charlite_home):
    from tests.test_generate import check_dataset

    env = {**os.environ, "CHARLITE_HOME": str(charlite_home)}
    ds = Dataset("beethoven")
    proc = subprocess.Popen(
        [str(CHARLITE), *ARGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            if _lines(ds.file("scenes")) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = check_dataset(ds)  # whatever was written before the kill is whole
    assert killed["scenes"] >= 1
    manifest = ds.read_manifest()
    assert manifest["status"] == "running"  # the killed run never finished it

    for _ in range(3):  # each rerun tries new seeds for what is still missing
        out = subprocess.run(
            [str(CHARLITE), *ARGS], env=env, capture_output=True, text=True, timeout=1800
        )
        assert out.returncode == 0, out.stderr
        if ds.read_manifest()["status"] == "complete":
            break
    manifest = ds.read_manifest()
    assert manifest["status"] == "complete", out.stdout
    counts = check_dataset(ds)
    assert counts == manifest["expected"] == {"scenes": 2, "experiences": 2, "protective": 1}
    assert manifest["counts"] == counts
    # experiences belong to the scenes of this run, one each
    scene_ids = {s.id for s in ds.scenes()}
    assert sorted(e.scene_id for e in ds.experiences()) == sorted(scene_ids)
    runs = manifest["runs"]
    assert len(runs) >= 1 and not any(r["interrupted"] for r in runs)
    failures = [json.loads(x) for x in ds.failures_path.read_text().splitlines()]
    attempts = [(f["task"], f["attempt"]) for f in failures if f["attempt"] >= 0]
    assert len(attempts) == len(set(attempts)), "a rerun repeated an attempt (same seed)"

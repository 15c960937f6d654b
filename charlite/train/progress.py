"""How training reports itself: a silent :class:`TrainingReporter` for the library, a rich one
for the CLI (:class:`RichTrainingReporter`).

On a terminal the rich reporter shows one progress bar (steps, loss, time left); elsewhere (a
pipe, CI, a test) it prints a plain line per logging step instead.
"""

from __future__ import annotations

import time
from typing import Any


class TrainingReporter:
    """Receives what training has to say. The base class says nothing."""

    def info(self, message: str) -> None:
        pass

    def start(self, total_steps: int, done_steps: int = 0) -> None:
        pass

    def step(self, step: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def stop(self) -> None:
        pass


class RichTrainingReporter(TrainingReporter):
    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False)
        self.progress = None
        self.task = None
        self.total = 0
        self.loss: float | None = None
        self.started = time.monotonic()

    def info(self, message: str) -> None:
        self.console.print(message, markup=False)

    def start(self, total_steps: int, done_steps: int = 0) -> None:
        self.total = total_steps
        self.started = time.monotonic()
        if not self.console.is_terminal:
            self.console.print(
                f"training: {total_steps} steps (from step {done_steps})", markup=False
            )
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("elapsed,"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=done_steps, loss="-"
        )

    def step(self, step: int, logs: dict[str, Any] | None = None) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
        loss = f"{self.loss:.4f}" if self.loss is not None else "-"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, loss=loss)
        elif logs and "loss" in logs:
            elapsed = time.monotonic() - self.started
            self.console.print(
                f"step {step}/{self.total}  loss {loss}  {elapsed:.0f}s", markup=False
            )

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

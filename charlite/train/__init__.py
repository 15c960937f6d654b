"""Training: SFT examples with loss masks, engine choice (Unsloth / peft), base preparation, runs.

Importing this package loads no model library; :func:`train` imports torch, transformers, peft
and TRL when called.

>>> from charlite.train import TrainConfig, latest_run, load_run
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charlite.train.config import TrainConfig
from charlite.train.runs import RUN_FORMAT, Run, latest_run, list_runs, load_run

if TYPE_CHECKING:
    from charlite.train.progress import TrainingReporter

__all__ = ["RUN_FORMAT", "Run", "TrainConfig", "latest_run", "list_runs", "load_run", "train"]


def train(
    slug: str,
    config: TrainConfig | None = None,
    *,
    run_id: str | None = None,
    resume: str | None = None,
    reporter: TrainingReporter | None = None,
) -> Run:
    """Fine-tune character ``slug`` as a LoRA adapter; see :mod:`charlite.train.trainer`."""
    from charlite.train.trainer import train as _train

    return _train(slug, config, run_id=run_id, resume=resume, reporter=reporter)

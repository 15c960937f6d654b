"""Training a character: dataset -> masked examples -> LoRA model -> TRL's SFT trainer -> run folder.

:func:`train` is the whole of ``charlite train``. It checks everything cheap first (the
character, the base spec, the dataset, the run folder) so a mistake costs a second, not a model
load; then it prepares the base, builds the examples, and trains with TRL's ``SFTTrainer``
(Unsloth's patched one with ``--engine unsloth``). Examples are packed into sequences of
``max_seq_len`` tokens without padding (each still attends only to itself), or grouped by
length when packing is off.

Ctrl-C finishes the current step, saves a checkpoint and marks the run ``interrupted``;
``resume=RUN`` continues it from that step with the settings it started with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from charlite import __version__
from charlite.characters import get_profile
from charlite.errors import DataError, InterruptedByUser, TrainingError
from charlite.files import JsonlWriter, read_jsonl, write_json_atomic, write_text_atomic
from charlite.home import CharacterPaths, check_name, ensure_dir
from charlite.knowledge import coverage as knowledge_coverage
from charlite.profile import Profile
from charlite.train.base import Base, locate_base, prepare_base
from charlite.train.config import TrainConfig
from charlite.train.dataset import load_training_data
from charlite.train.engines import choose_engine, load_peft, load_unsloth, precision
from charlite.train.examples import build_examples
from charlite.train.loss import accepts_logits_to_keep, labelled_loss
from charlite.train.progress import TrainingReporter
from charlite.train.runs import RUN_FORMAT, RUN_KIND, Run, load_run, new_run_id
from charlite.train.templates import fallback_chat_template

VERSIONED = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "unsloth")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"charlite": __version__, "python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class TokenCounter:
    """Tokens the trainer actually fed the model: all positions, real (non-pad) and trained."""

    def __init__(self, previous: dict[str, Any] | None = None):
        previous = previous or {}
        self.positions = int(previous.get("positions", 0))
        self.real = int(previous.get("real", 0))
        self.trained = int(previous.get("trained", 0))

    def add(self, inputs: dict[str, Any]) -> None:
        ids = inputs.get("input_ids")
        if ids is None:
            return
        self.positions += int(ids.numel())
        mask = inputs.get("attention_mask")
        self.real += int(mask.sum()) if mask is not None else int(ids.numel())
        labels = inputs.get("labels")
        if labels is not None:
            self.trained += int((labels != -100).sum())

    def as_dict(self) -> dict[str, Any]:
        padding = self.positions - self.real
        return {
            "positions": self.positions,
            "real": self.real,
            "trained": self.trained,
            "padding": padding,
            "padding_share": round(padding / self.positions, 5) if self.positions else 0.0,
        }


def train(
    slug: str,
    config: TrainConfig | None = None,
    *,
    run_id: str | None = None,
    resume: str | None = None,
    reporter: TrainingReporter | None = None,
) -> Run:
    """Train ``slug`` and return its completed run. See the module docstring."""
    began = time.monotonic()
    reporter = reporter or TrainingReporter()
    profile = get_profile(slug)
    paths = CharacterPaths.of(profile.slug)
    previous: dict[str, Any] | None = None
    checkpoint: Path | None = None
    if resume:
        config, previous, checkpoint = _resumed(profile.slug, resume)
        run_id = resume
    else:
        config = config or TrainConfig()
        run_id = _new_run_id(paths, run_id)
    folder = paths.run(run_id)

    source = locate_base(config.base, allow_download=config.allow_download)
    data = load_training_data(profile, config.dataset)
    _check_unchanged(previous, "dataset", data.hash, f"dataset '{data.name}'", run_id)
    choice = choose_engine(config.engine)
    reporter.info(choice.line())
    cfg = config.resolved(choice.device)
    _import_libraries(choice.engine)
    base = prepare_base(source, log=reporter.info)
    _check_unchanged(previous, "base", base.hash, f"base {base.spec}", run_id)
    tokenizer = _load_tokenizer(base, reporter)
    example_set = _build_examples(tokenizer, profile, data, cfg, reporter)

    created_here = not previous and _main_process()
    if created_here:
        _make_run_folder(folder)
    manifest = _run_manifest(
        previous, run_id, profile, base, data, example_set, cfg, choice, tokenizer
    )
    run = Run(profile.slug, run_id, folder, manifest)
    if checkpoint is not None and _main_process():
        _drop_metrics_after(run.metrics_path, int(checkpoint.name.rsplit("-", 1)[1]))
    session = _Session(run, manifest, reporter, previous, began)
    session.save()
    try:
        session.fit(base, choice, cfg, tokenizer, example_set, checkpoint)
    except BaseException as exc:
        if created_here and session.steps_done == 0 and run.latest_checkpoint() is None:
            shutil.rmtree(folder, ignore_errors=True)  # nothing worth keeping
        elif not isinstance(exc, InterruptedByUser):
            session.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", exc)
        raise
    if not _main_process():
        return run
    return load_run(profile.slug, run_id)


def _resumed(slug: str, resume: str) -> tuple[TrainConfig, dict[str, Any], Path]:
    """The settings, manifest and latest checkpoint of the run ``resume`` continues."""
    old = load_run(slug, resume)
    if old.completed:
        raise TrainingError(
            f"run '{resume}' of {slug} has already completed",
            hint=f"start a new run with 'charlite train {slug}'",
        )
    checkpoint = old.latest_checkpoint()
    if checkpoint is None:
        raise TrainingError(
            f"run '{resume}' of {slug} has no checkpoint to resume from",
            hint=f"start a new run with 'charlite train {slug}'",
        )
    config = TrainConfig.validated(old.manifest.get("config") or {}, where=f"run '{resume}'")
    return config, old.manifest, checkpoint


def _new_run_id(paths: CharacterPaths, run_id: str | None) -> str:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not run_id:
        raise TrainingError(
            "under accelerate launch every process must agree on the run: name it",
            hint="add --run ID",
        )
    run_id = check_name(run_id or new_run_id(), "run id")
    if _main_process() and paths.run(run_id).exists():
        raise TrainingError(
            f"run folder {paths.run(run_id)} already exists; nothing was changed",
            hint=f"choose another name with --run, or continue it with --resume {run_id}",
        )
    return run_id


def _check_unchanged(previous: dict[str, Any] | None, key: str, digest: str, what: str, run_id):
    """A resumed run goes on only with the dataset and base it started with."""
    if previous and (previous.get(key) or {}).get("hash") != digest:
        raise TrainingError(
            f"{what} changed since run '{run_id}' started; cannot resume", hint="start a new run"
        )


def _import_libraries(engine: str) -> None:
    if engine == "unsloth":
        import unsloth  # noqa: F401  (Unsloth patches transformers and TRL: import it first)
    if not os.environ.get("CHARLITE_VERBOSE"):
        _quiet_libraries()


def _load_tokenizer(base: Base, reporter: TrainingReporter):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if not getattr(tokenizer, "chat_template", None):
        # a base (not instruct) model: give it the turns its vocabulary knows; the manifest keeps
        # the template and export writes it into the merged GGUF
        tokenizer.chat_template = fallback_chat_template(tokenizer)
        reporter.info(f"base {base.spec} has no chat template: using a fallback one")
    return tokenizer


def _build_examples(
    tokenizer, profile: Profile, data, cfg: TrainConfig, reporter: TrainingReporter
):
    example_set = build_examples(
        tokenizer, profile, data.records, cfg.max_seq_len, cfg.knowledge_share
    )
    if not example_set.examples:
        raise DataError(f"dataset '{data.name}' gave no example with tokens to train on")
    reporter.info(
        f"data: {data.counts['experience']} experiences, {data.counts['protective']} protective"
        f" -> {len(example_set.examples)} examples, "
        f"{example_set.token_counts()['tokens']} tokens"
    )
    return example_set


def _make_run_folder(folder: Path) -> None:
    ensure_dir(folder.parent)
    try:
        folder.mkdir()
    except FileExistsError:
        raise TrainingError(
            f"run folder {folder} already exists; nothing was changed",
            hint="choose another name with --run",
        ) from None


def _run_manifest(
    previous, run_id, profile: Profile, base: Base, data, example_set, cfg, choice, tokenizer
) -> dict[str, Any]:
    """The run's manifest: the previous one when resuming, a new one in the main process."""
    if previous:
        manifest = dict(previous)
    elif _main_process():
        manifest = {"format": RUN_FORMAT, "kind": RUN_KIND, "run_id": run_id, "created": _now()}
    else:
        manifest = {}
    manifest.update(
        {
            "character": {
                "slug": profile.slug,
                "name": profile.name,
                "short_name": profile.short_name,
                "profile_digest": profile.digest(),
            },
            "status": "running",
            "finished": None,
            "base": base.describe(),
            "dataset": {**data.summary(), **example_set.token_counts()},
            "knowledge": {
                "share": cfg.knowledge_share,
                "coverage": knowledge_coverage(profile, data.records),
            },
            "config": cfg.model_dump(mode="json"),
            "engine": choice.engine,
            "device": choice.device,
            "dtype": precision(choice.device, choice.engine),
            "chat_template": tokenizer.chat_template,
            "eos_token": tokenizer.eos_token,
            "versions": _versions(),
        }
    )
    return manifest


def _drop_metrics_after(path: Path, step: int) -> None:
    """Before resuming from the checkpoint of ``step``: the metrics of later steps (logged
    before a kill -9, and about to be redone) are removed, so each step is logged once."""
    if not path.exists():
        return
    records = read_jsonl(path)
    kept = [
        r
        for r in records
        if isinstance(r, dict) and not (isinstance(r.get("step"), int) and r["step"] > step)
    ]
    if len(kept) != len(records) or not path.read_bytes().endswith(b"\n"):
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


class _Session:
    """One process's share of a run: loads the model, runs the trainer, keeps the manifest."""

    def __init__(
        self,
        run: Run,
        manifest: dict[str, Any],
        reporter: TrainingReporter,
        previous,
        started: float,
    ):
        self.run = run
        self.manifest = manifest
        self.reporter = reporter
        self.started = started
        self.previous_wall = float((previous or {}).get("wall_time_s") or 0.0)
        self.previous_train = float((previous or {}).get("train_time_s") or 0.0)
        self.tokens = TokenCounter((previous or {}).get("tokens"))
        self.final_loss = (previous or {}).get("final_loss")
        steps = (previous or {}).get("steps") or {}
        self.steps_done = int(steps.get("done") or 0)
        self.total_steps = int(steps.get("total") or 0)
        self.train_seconds = 0.0

    def save(self) -> None:
        if not _main_process():
            return
        self.manifest["wall_time_s"] = round(
            self.previous_wall + time.monotonic() - self.started, 2
        )
        self.manifest["train_time_s"] = round(self.previous_train + self.train_seconds, 2)
        self.manifest["tokens"] = self.tokens.as_dict()
        self.manifest["final_loss"] = self.final_loss
        self.manifest["steps"] = {"done": self.steps_done, "total": self.total_steps}
        write_json_atomic(self.run.manifest_path, self.manifest)

    def finish(self, status: str, exc: BaseException | None = None) -> None:
        self.manifest["status"] = status
        self.manifest["finished"] = _now()
        if exc is not None and status == "failed":
            self.manifest["error"] = f"{type(exc).__name__}: {exc}"[:500]
        self.save()

    # ------------------------------------------------------------------------------------------

    def fit(self, base: Base, choice, cfg: TrainConfig, tokenizer, example_set, checkpoint) -> None:
        trainer = self._trainer(base, choice, cfg, example_set)
        stopper = _make_callbacks_class()(self)
        trainer.add_callback(stopper)
        began = time.monotonic()
        try:
            with _ctrl_c_stops(stopper), _out_of_memory_is_an_error():
                trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finally:
            self.train_seconds = time.monotonic() - began
            if choice.device == "cuda":
                import torch

                peak = torch.cuda.max_memory_allocated() / 1e9
                self.manifest["peak_memory_gb"] = round(peak, 2)
            self.reporter.stop()
            stopper.close()

        self.steps_done = trainer.state.global_step
        if stopper.stop_requested and self.steps_done < trainer.state.max_steps:
            self.finish("interrupted")
            raise InterruptedByUser(
                f"training stopped at step {self.steps_done} of {self.total_steps}; "
                f"checkpoint saved in {self.run.checkpoints_dir}",
                hint=f"continue with 'charlite train {self.run.slug} --resume {self.run.run_id}'",
            )
        if not trainer.is_world_process_zero():
            return
        tmp = self.run.path / ".adapter-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.model.save_pretrained(str(tmp))
        os.replace(tmp, self.run.adapter_dir)
        shutil.rmtree(self.run.checkpoints_dir, ignore_errors=True)
        self.finish("completed")

    def _trainer(self, base: Base, choice, cfg: TrainConfig, example_set):
        """The LoRA model on the base, in TRL's trainer; the manifest notes LoRA and packing."""
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        if choice.engine == "unsloth":
            model, trainer_tokenizer, lora = load_unsloth(str(base.path), cfg)
        else:
            model, trainer_tokenizer, lora = load_peft(str(base.path), cfg, choice.device)
        self.manifest["lora"] = {
            "r": lora["r"],
            "alpha": lora["lora_alpha"],
            "dropout": lora["lora_dropout"],
            "target_modules": list(lora["target_modules"]),
        }
        trainer = build_trainer(
            model,
            trainer_tokenizer,
            example_set.examples,
            cfg,
            choice,
            output_dir=self.run.checkpoints_dir,
            callbacks=[],
            counter=self.tokens,
        )
        # what really happened: Unsloth turns packing off for gemma2 and when a processor is
        # passed (Gemma-3 4B+), with only a log line
        used = bool(getattr(trainer.args, "packing", cfg.packing))
        self.manifest["packing"] = {"asked": cfg.packing, "used": used}
        return trainer


@contextlib.contextmanager
def _ctrl_c_stops(stopper):
    """The first Ctrl-C asks the trainer to stop after this step (and save a checkpoint); a
    second one interrupts at once."""

    def on_sigint(signum, frame):
        if stopper.stop_requested:
            raise KeyboardInterrupt
        stopper.stop_requested = True

    old_handler = None
    with contextlib.suppress(ValueError):  # not the main thread: no Ctrl-C handling
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)


@contextlib.contextmanager
def _out_of_memory_is_an_error():
    try:
        yield
    except Exception as exc:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            raise TrainingError(
                "out of memory while training",
                hint="lower --batch-size or --max-seq-len (raise --grad-accum to keep the batch)",
            ) from None
        raise


def _quiet_libraries() -> None:
    """No download/loading bars or library warnings inside our progress display."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _make_callbacks_class():
    from transformers import TrainerCallback

    class Callbacks(TrainerCallback):
        """Progress, metrics.jsonl, the manifest's step counts, and stopping on Ctrl-C."""

        def __init__(self, session: _Session):
            self.session = session
            self.stop_requested = False
            self.metrics = JsonlWriter(session.run.metrics_path) if _main_process() else None

        def on_train_begin(self, args, state, control, **kwargs):
            self.session.total_steps = state.max_steps
            self.session.steps_done = state.global_step
            self.session.save()
            self.session.reporter.start(state.max_steps, state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            self.session.steps_done = state.global_step
            self.session.reporter.step(state.global_step)
            if self.stop_requested:
                self.session.reporter.info(
                    f"stopping at step {state.global_step}: saving a checkpoint (Ctrl-C again to abort)"
                )
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" not in logs:
                return
            self.session.final_loss = float(logs["loss"])
            record = {
                "step": state.global_step,
                "epoch": round(float(logs.get("epoch", state.epoch or 0.0)), 4),
                "loss": float(logs["loss"]),
                "lr": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "tokens": self.session.tokens.real,
                "elapsed_s": round(
                    self.session.previous_wall + time.monotonic() - self.session.started, 2
                ),
            }
            if self.metrics is not None:
                self.metrics.write({k: v for k, v in record.items() if v is not None})
            self.session.reporter.step(state.global_step, logs)

        def on_save(self, args, state, control, **kwargs):
            self.session.steps_done = state.global_step
            self.session.save()

        def close(self):
            if self.metrics is not None:
                self.metrics.close()
                self.metrics = None

    return Callbacks


def build_trainer(
    model,
    tokenizer,
    examples,
    cfg: TrainConfig,
    choice,
    *,
    output_dir: Path,
    callbacks: list | None = None,
    counter: TokenCounter | None = None,
):
    """TRL's SFT trainer over pre-tokenized, pre-masked examples (also used by the benchmark)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_dict(
        {"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]}
    )
    known = {f.name for f in dataclasses.fields(SFTConfig)}
    args = SFTConfig(**sft_options(cfg, choice, output_dir, known))

    sparse = labelled_logits_only(model, choice)

    class CountingSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if counter is not None and model.training:
                counter.add(inputs)
            if sparse and not return_outputs and self._plain_loss(inputs):
                return self._labelled_loss(model, inputs, num_items_in_batch)
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

        def _plain_loss(self, inputs) -> bool:
            """TRL's default loss (token-level NLL, nothing added or replaced)."""
            parallel = getattr(self.accelerator, "parallelism_config", None)
            return (
                "labels" in inputs
                and "shift_labels" not in inputs
                and getattr(self.args, "loss_type", "nll") in ("nll", "chunked_nll")
                and getattr(self, "compute_loss_func", None) is None
                and getattr(self, "label_smoother", None) is None
                and not getattr(self, "aux_loss_enabled", False)
                and not getattr(parallel, "sp_enabled", False)
            )

        def _labelled_loss(self, model, inputs, num_items_in_batch):
            parts = labelled_loss(model, inputs, num_items_in_batch)
            loss = parts.loss
            # as TRL: num_items_in_batch counts every rank's tokens and DDP averages gradients
            across = getattr(self.args, "average_tokens_across_devices", False)
            if across and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            self._record_metrics(inputs, parts)
            return loss

        def _record_metrics(self, inputs, parts) -> None:
            """The entropy, token accuracy and token count TRL's own loss would have logged."""
            metrics = getattr(self, "_metrics", None)
            if metrics is None:
                return
            mode = "train" if self.model.training else "eval"
            gather = self.accelerator.gather_for_metrics
            valid = gather(parts.labelled).sum()
            entropy = gather(parts.entropy_sum).sum()
            correct = gather(parts.correct).sum()
            ok = valid > 0
            metrics[mode]["entropy"].append((entropy / valid).item() if ok else 0.0)
            metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if ok else 0.0)
            if mode == "train" and hasattr(self, "_total_train_tokens"):
                if "attention_mask" in inputs:
                    seen = gather(inputs["attention_mask"].sum()).sum().item()
                else:
                    seen = inputs["input_ids"].numel()
                self._total_train_tokens += seen
                metrics[mode]["num_tokens"] = [self._total_train_tokens]

    trainer = CountingSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks or None,
    )
    trainer.remove_callback(PrinterCallback)  # progress and metrics are ours
    return trainer


def labelled_logits_only(model, choice) -> bool:
    """Whether the trainer computes logits only at labelled positions (:mod:`charlite.train.loss`).

    With the peft engine off CUDA, yes. On CUDA, TRL's fused LM head (Triton) already scores
    only the labelled positions, in tiles, without materialising the logits; Unsloth brings its
    own fused cross-entropy. Both are kept."""
    return choice.engine == "peft" and choice.device != "cuda" and accepts_logits_to_keep(model)


def sft_options(cfg: TrainConfig, choice, output_dir: Path, known: set[str]) -> dict[str, Any]:
    """``SFTConfig``'s arguments for ``cfg``, only those this TRL version knows (``known``)."""
    dtype = precision(choice.device, choice.engine)
    options: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps or -1,
        "learning_rate": cfg.lr,
        "lr_scheduler_type": cfg.scheduler,
        "warmup_steps": cfg.warmup,
        "weight_decay": cfg.weight_decay,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": 2,
        "report_to": "none",
        "disable_tqdm": True,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "bf16": dtype == "bfloat16",
        "fp16": dtype == "float16",
        "use_cpu": choice.device == "cpu",
        "max_length": cfg.max_seq_len,
        "packing": cfg.packing,
        "packing_strategy": "bfd",
        "padding_free": cfg.packing,
        "dataloader_num_workers": 0,
        "dataset_num_proc": None,
    }
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in known else None
    # Unsloth brings its own gradient checkpointing (set when its LoRA model is made)
    options[checkpointing or "gradient_checkpointing"] = (
        bool(cfg.gradient_checkpointing) and choice.engine != "unsloth"
    )
    if not cfg.packing:
        if "train_sampling_strategy" in known:
            options["train_sampling_strategy"] = "group_by_length"
        else:
            options["group_by_length"] = True
    return {k: v for k, v in options.items() if k in known}

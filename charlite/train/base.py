"""Training bases: a model in Hugging Face format that transformers, peft and Unsloth can load.

* ``embedded`` (and ``gguf:PATH``): the GGUF is loaded into transformers once, dequantized, and
  saved under ``cache/bases/HASH/`` as safetensors with its tokenizer and ``base.json``, so later
  runs start in seconds. HASH is the GGUF file's sha256; the folder appears whole or not at all
  (written beside it, then renamed).
* ``hf:ID_OR_PATH``: a local folder, or a Hub model already in the local cache. The network is
  used only with ``allow_download`` (and never when ``HF_HUB_OFFLINE=1``).

The base's spec and hash go into the run manifest so export can find the matching GGUF.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlite.errors import ModelError, SpecError
from charlite.files import read_json, write_json_atomic
from charlite.gguf import file_sha256
from charlite.home import cache_dir, ensure_dir
from charlite.spec import ModelSpec, parse_spec

BASE_FORMAT = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Base:
    spec: str
    """The spec as the user would write it: ``embedded``, ``gguf:PATH``, ``hf:ID``."""
    hash: str
    path: Path
    """A folder ``from_pretrained`` loads: config, weights, tokenizer."""
    gguf: Path | None = None
    """The GGUF the base was made from, if any (export builds on it)."""

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "spec": self.spec,
            "hash": self.hash,
            "gguf": str(self.gguf) if self.gguf else None,
            "path": str(self.path),
        }
        config = self.path / "config.json"
        if config.is_file():
            data = read_json(config)
            info["architecture"] = data.get("model_type")
            for key in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
                if key in data:
                    info[key] = data[key]
        return info


def folder_fingerprint(folder: Path) -> str:
    """A cheap stable identity of a model folder: config, tokenizer, and each weight file's size,
    head and tail (hashing every byte of a 16 GB model would take minutes)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        digest.update(path.name.encode() + b"\0")
        if path.name.endswith(WEIGHT_SUFFIXES):
            size = path.stat().st_size
            digest.update(str(size).encode())
            with open(path, "rb") as fh:
                digest.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(size - (1 << 20))
                    digest.update(fh.read())
        elif (
            path.suffix in (".json", ".model", ".txt", ".jinja") and path.stat().st_size < 64 << 20
        ):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def parse_base(text: str) -> ModelSpec:
    """The base spec, or a clear line for specs that cannot be trained on."""
    spec = parse_spec(text)
    if spec.kind in ("ollama", "openai"):
        raise SpecError(
            f"cannot train on '{spec}': a served model has no weights to fine-tune",
            hint="use --base embedded, gguf:PATH or hf:ID_OR_PATH",
        )
    return spec


@dataclass(frozen=True)
class BaseSource:
    """Where a base comes from, found without loading anything."""

    spec: str
    gguf: Path | None = None
    folder: Path | None = None


def locate_base(text: str, *, allow_download: bool = False) -> BaseSource:
    """Find the base's file or folder (fast), or say clearly why it cannot be trained on."""
    spec = parse_base(text)
    if spec.kind in ("embedded", "gguf"):
        path = spec.gguf_path()
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        return BaseSource(str(spec), gguf=path.resolve())
    return BaseSource(str(spec), folder=_hf_folder(spec.name, allow_download))


def prepare_base(text: str | BaseSource, *, allow_download: bool = False, log=None) -> Base:
    """A base ready for ``from_pretrained``; a GGUF is converted once and cached."""
    source = (
        text if isinstance(text, BaseSource) else locate_base(text, allow_download=allow_download)
    )
    if source.gguf is not None:
        return _from_gguf(source.spec, source.gguf, log)
    assert source.folder is not None
    return Base(source.spec, folder_fingerprint(source.folder), source.folder)


# ---------------------------------------------------------------------------------------------
# GGUF -> cached safetensors


def _from_gguf(spec: str, gguf: Path, log) -> Base:
    digest = file_sha256(gguf)[:16]
    root = ensure_dir(cache_dir("bases"))
    final = root / digest
    if (final / "base.json").is_file() and (final / "config.json").is_file():
        return Base(spec, digest, final, gguf.resolve())
    if log:
        log(f"preparing base {spec}: loading {gguf.name} into transformers (once, about a minute)")
    tmp = root / f".tmp-{digest}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert_gguf(gguf, tmp)
        write_json_atomic(
            tmp / "base.json",
            {
                "format": BASE_FORMAT,
                "spec": spec,
                "hash": digest,
                "gguf": str(gguf.resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "base.json").is_file():  # not a concurrent preparation that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Base(spec, digest, final, gguf.resolve())


@contextlib.contextmanager
def _gguf_read_once(gguf: Path):
    """transformers reads a GGUF's metadata anew for the tokenizer, the config and the weights,
    and ``gguf.GGUFReader`` parses every entry of the vocabulary arrays in Python: about 30
    CPU-seconds each time for a 262k-token vocabulary (Gemma-3). Inside this block the reader of
    ``gguf`` is parsed once and shared (read-only: transformers only reads fields and tensors)."""
    import gguf as gguf_module

    original = gguf_module.GGUFReader
    target = os.path.realpath(gguf)
    cache: dict[str, Any] = {}

    def reader(path, *args, **kwargs):
        if args or kwargs or os.path.realpath(path) != target:
            return original(path, *args, **kwargs)
        if "reader" not in cache:
            cache["reader"] = original(path)
        return cache["reader"]

    gguf_module.GGUFReader = reader
    try:
        yield
    finally:
        gguf_module.GGUFReader = original
        cache.clear()


def _convert_gguf(gguf: Path, out: Path) -> None:
    with _gguf_read_once(gguf):
        _convert_gguf_once(gguf, out)


def _convert_gguf_once(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    try:  # newer transformers keep GGUF blocks packed unless told to dequantize
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        try:
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **kwargs)
        except TypeError:
            kwargs.pop("quantization_config", None)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **kwargs)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ModelError(
            f"transformers cannot load {gguf.name}: {str(exc).splitlines()[0] if str(exc) else exc}",
            hint="train on a base transformers supports (llama, qwen2, gemma3, ...) or use hf:PATH",
        ) from None
    packed = [
        type(m).__name__ for m in model.modules() if type(m).__name__.lower().startswith("gguf")
    ]
    if packed:
        raise ModelError(
            f"{gguf.name} loaded with packed GGUF layers ({packed[0]}); cannot train on it"
        )
    # The weights are now plain float tensors: forget the GGUF loader so they save as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model


# ---------------------------------------------------------------------------------------------
# Hugging Face folders and cache


def _hf_folder(name: str, allow_download: bool) -> Path:
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"{local} is not a Hugging Face model folder (no config.json)")
        return local.resolve()
    if local.exists() or name.startswith((".", "/", "~")):
        raise ModelError(f"hf:{name}: no such model folder")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            repo_id=name,
            local_files_only=offline or not allow_download,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
        )
    except Exception as exc:  # hub errors have many types; all mean the same thing here
        why = type(exc).__name__
        if offline or not allow_download:
            raise ModelError(
                f"hf:{name} is not in the local Hugging Face cache ({why})",
                hint="download it first (huggingface-cli download "
                f"{name}), give a local folder, or pass --allow-download with network access",
            ) from None
        raise ModelError(f"cannot download hf:{name} ({why}: {exc})") from None
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelError(f"hf:{name} in the local cache has no config.json")
    return folder.resolve()

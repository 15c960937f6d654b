"""Hugging Face llama-family weights to GGUF, with the ``gguf`` package (no llama.cpp checkout).

What it writes: tensor names mapped with ``gguf.get_tensor_name_map``, Q/K rows permuted to
llama.cpp's rotary layout, the hyperparameters, the GPT-2-style BPE vocabulary (tokens, token
types, merges, pre-tokenizer name), special token ids and the chat template. A LoRA adapter
can be merged on the way (``lora=``), which is how an ``hf:`` base becomes a merged export.

Other architectures and tokenizers are refused with "not supported yet: ...".
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlite.errors import ExportError
from charlite.export.ggufio import HF_TO_GGUF_ARCH, SafetensorsFile, permute_qk
from charlite.files import atomic_path

LLAMA3_SPLIT = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
# A tokenizer.json pre-tokenizer, reduced to its steps -> llama.cpp's pre-tokenizer name.
PRE_TOKENIZERS: dict[tuple, str] = {
    (("bytelevel", True),): "gpt-2",
    (("digits", True), ("bytelevel", True)): "smollm",
    (("split", LLAMA3_SPLIT), ("bytelevel", False)): "llama-bpe",
}
TOKEN_NORMAL, TOKEN_UNUSED, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 5, 3, 4


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(
            f"{path} does not exist", hint="is this a Hugging Face model folder?"
        ) from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} is not readable JSON: {exc}") from None


def model_arch(model_dir: Path) -> str:
    """The ``model_type`` of a Hugging Face model folder."""
    return str(_read_json(Path(model_dir) / "config.json").get("model_type") or "unknown")


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(_read_json(index).get("weight_map", {}).values()))
        return [model_dir / f for f in files]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise ExportError(
        f"{model_dir} has no model.safetensors",
        hint="save the model with save_pretrained(safe_serialization=True)",
    )


def _step(pre: dict) -> tuple:
    kind = pre.get("type")
    if kind == "ByteLevel":
        return ("bytelevel", bool(pre.get("use_regex", True)))
    if kind == "Digits":
        return ("digits", bool(pre.get("individual_digits", False)))
    if kind == "Split":
        pattern = pre.get("pattern") or {}
        return ("split", pattern.get("Regex") or pattern.get("String"))
    return (str(kind),)


def pre_tokenizer_name(tokenizer: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a ``tokenizer.json``."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = (
        tuple(_step(p) for p in pre.get("pretokenizers", []))
        if pre.get("type") == "Sequence"
        else (_step(pre),)
    )
    name = PRE_TOKENIZERS.get(steps)
    if name is None:
        raise ExportError(
            f"not supported yet: the pre-tokenizer {[s[0] for s in steps]} of this tokenizer"
        )
    return name


def _tokens(tokenizer: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        kind = model.get("type") or "unknown"
        if model.get("byte_fallback"):
            kind = f"{kind} with byte fallback (SentencePiece-style)"
        raise ExportError(f"not supported yet: {kind} tokenizers")
    by_id: dict[int, tuple[str, int]] = {
        int(i): (t, TOKEN_NORMAL) for t, i in model["vocab"].items()
    }
    for added in tokenizer.get("added_tokens") or []:
        kind = TOKEN_CONTROL if added.get("special") else TOKEN_USER_DEFINED
        by_id[int(added["id"])] = (added["content"], kind)
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        text, kind = by_id.get(i, (f"[PAD{i}]", TOKEN_UNUSED))
        tokens.append(text)
        types.append(kind)
    return tokens, types


def _rope(config: dict) -> tuple[float, dict | None]:
    params = config.get("rope_parameters") or {}
    theta = config.get("rope_theta") or params.get("rope_theta") or 10000.0
    scaling = config.get("rope_scaling") or (
        params if params.get("rope_type", "default") != "default" else None
    )
    if scaling and (scaling.get("rope_type") or scaling.get("type")) in (None, "default"):
        scaling = None
    return float(theta), scaling


def _llama3_rope_factors(scaling: dict, theta: float, head_dim: int) -> np.ndarray:
    """Per-frequency factors of Llama 3.1's long-context rope (the ``rope_freqs`` tensor)."""
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / (theta ** (i / head_dim))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


@dataclass
class _Llama:
    """What the GGUF header says about a llama-family ``config.json``."""

    config: dict
    n_layers: int
    n_head: int
    n_kv: int
    hidden: int
    head_dim: int
    theta: float
    scaling: dict | None
    rope_kind: str | None
    tie: bool

    @classmethod
    def read(cls, model_dir: Path) -> _Llama:
        config = _read_json(model_dir / "config.json")
        model_type = str(config.get("model_type") or "unknown")
        if HF_TO_GGUF_ARCH.get(model_type) != "llama":
            raise ExportError(
                f"not supported yet: {model_type}", hint="charlite converts llama-family models"
            )
        n_head = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        theta, scaling = _rope(config)
        rope_kind = (scaling or {}).get("rope_type") or (scaling or {}).get("type")
        if rope_kind not in (None, "linear", "llama3"):
            raise ExportError(f"not supported yet: {rope_kind} rope scaling")
        return cls(
            config=config,
            n_layers=int(config["num_hidden_layers"]),
            n_head=n_head,
            n_kv=int(config.get("num_key_value_heads") or n_head),
            hidden=hidden,
            head_dim=int(config.get("head_dim") or hidden // n_head),
            theta=theta,
            scaling=scaling,
            rope_kind=rope_kind,
            tie=bool(config.get("tie_word_embeddings", False)),
        )


def _plan(model_dir: Path, hp: _Llama, deltas: dict) -> list[tuple[str, SafetensorsFile, str]]:
    """(gguf name, file, Hugging Face name) of every tensor to write, in the files' order."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp.n_layers)
    plan = []
    for f in (SafetensorsFile(p) for p in _weight_files(model_dir)):
        for hf_name in f.names():
            if hf_name.endswith("rotary_emb.inv_freq") or (hp.tie and hf_name == "lm_head.weight"):
                continue
            gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gname is None:
                raise ExportError(f"not supported yet: tensor {hf_name} in a llama model")
            plan.append((gname, f, hf_name))
    unknown = set(deltas) - {hf for _, _, hf in plan}
    if unknown:
        raise ExportError(
            f"the adapter changes {sorted(unknown)[0]}, which {model_dir.name} does not have"
        )
    return plan


def _add_hparams(writer, hp: _Llama, name: str, n_vocab: int, float16: bool) -> None:
    import gguf

    config = hp.config
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(hp.n_layers)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hp.hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_kv)
    writer.add_rope_freq_base(hp.theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-5))
    writer.add_vocab_size(n_vocab)
    writer.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim != hp.hidden // hp.n_head:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    if hp.rope_kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(hp.scaling["factor"]))
    ftype = gguf.LlamaFileType.MOSTLY_F16 if float16 else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(ftype))


def _add_vocab(writer, model_dir: Path, pre: str, tokens: list, types: list) -> None:
    """The BPE vocabulary, its pre-tokenizer, merges, special tokens and chat template."""
    import gguf

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    logging.getLogger("gguf").setLevel(logging.ERROR)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise ExportError(f"{model_dir / 'tokenizer.json'} has no BPE merges")
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:
        writer.add_add_bos_token(False)


def _write_tensors(writer, plan, hp: _Llama, deltas: dict, float16: bool) -> None:
    """Tensor infos, then the data: adapter deltas added, Q/K permuted, matrices in F16."""
    shapes = []
    for gname, f, hf_name in plan:
        shape = f.shape(hf_name)
        dtype = np.float16 if float16 and len(shape) > 1 else np.float32
        shapes.append((f, hf_name, dtype))
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(gname, shape, np.dtype(dtype), nbytes)
    factors = None
    if hp.rope_kind == "llama3":
        factors = _llama3_rope_factors(hp.scaling, hp.theta, hp.head_dim)
        writer.add_tensor_info(
            "rope_freqs.weight", factors.shape, np.dtype(np.float32), factors.nbytes
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for f, hf_name, dtype in shapes:
        w = f.get(hf_name)
        if hf_name in deltas:
            w = w + deltas[hf_name].delta()
        if hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            w = permute_qk(w, hp.n_head)
        elif hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            w = permute_qk(w, hp.n_kv)
        writer.write_tensor_data(np.ascontiguousarray(w.astype(dtype)))
    if factors is not None:
        writer.write_tensor_data(factors)


def convert_hf(
    model_dir: Path,
    out: Path,
    *,
    out_type: str = "f16",
    lora: Sequence = (),
    name: str | None = None,
) -> Path:
    """Write the Hugging Face model in ``model_dir`` (plus ``lora``, if given) as a GGUF.

    ``lora`` holds :class:`~charlite.export.gguf_lora.LoraModule` objects (Hugging Face module
    names, peft layout); their deltas are added before the Q/K permutation.
    """
    import gguf

    model_dir = Path(model_dir)
    hp = _Llama.read(model_dir)
    if out_type not in ("f16", "f32"):
        raise ExportError(f"unknown conversion type '{out_type}'", hint="use f16 or f32")
    tokenizer = _read_json(model_dir / "tokenizer.json")
    tokens, types = _tokens(tokenizer, int(hp.config.get("vocab_size") or 0))
    pre = pre_tokenizer_name(tokenizer)
    deltas = {f"{m.name}.weight": m for m in lora}
    plan = _plan(model_dir, hp, deltas)
    float16 = out_type == "f16"
    label = name or str(hp.config.get("_name_or_path") or model_dir.name)
    with atomic_path(Path(out)) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        try:
            _add_hparams(writer, hp, label, len(tokens), float16)
            _add_vocab(writer, model_dir, pre, tokens, types)
            _write_tensors(writer, plan, hp, deltas, float16)
            writer.flush()
        finally:
            writer.close()
    return Path(out)

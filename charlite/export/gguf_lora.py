"""A peft LoRA adapter as a GGUF LoRA file that llama.cpp and Ollama load over the base.

Layout (what llama.cpp reads):

* key-values ``general.architecture`` (the base's), ``general.type = "adapter"``,
  ``adapter.type = "lora"``, ``adapter.lora.alpha``;
* per adapted weight ``blk.N.NAME.weight.lora_a`` = peft ``lora_A`` (r x in) and
  ``.lora_b`` = peft ``lora_B`` (out x r); llama.cpp scales ``b @ a`` by alpha / r.

Names go through ``gguf``'s tensor name map for the base's architecture (as llama.cpp's
``convert_lora_to_gguf.py`` does), after the multimodal wrappers' ``language_model.`` prefix is
taken off (Gemma-3 4B and larger); fused projections (Phi-3's ``qkv_proj``, ``gate_up_proj``)
map to the base's fused tensors as they are. Modules of a vision tower are left out: a text
GGUF has no counterpart and chat never runs them.

For llama-architecture bases (Llama, Mistral, SmolLM) the rows of ``lora_b`` of Q and K are
permuted like the base's own Q and K rows (see :func:`charlite.export.ggufio.permute_qk`);
without that the adapter loads and silently produces wrong output. Other architectures
(qwen2, qwen3, gemma*, phi3) keep Hugging Face's row order, so nothing is permuted there.

Every adapted tensor is checked against the base GGUF (name, input and output sizes) before
any file is written, so an adapter trained on another base is a clear error, not a llama.cpp
abort or garbage text.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charlite.errors import ExportError
from charlite.export.ggufio import (
    HF_TO_GGUF_ARCH,
    BaseInfo,
    permute_qk,
    read_safetensors,
)
from charlite.files import atomic_path

ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")
_PREFIXES = ("base_model.model.",)
# Multimodal wrappers (Gemma-3 4B+, Mistral-3): the text model's layers under another name.
_TEXT_MODEL_PREFIXES = (
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.", ""),
)
_NOT_TEXT = ("vision_tower.", "vision_model.", "multi_modal_projector.", "audio_tower.")


def text_module_name(name: str) -> str | None:
    """The module's name in a text-only model (``None``: part of a vision or audio tower).

    >>> text_module_name("model.language_model.layers.3.self_attn.q_proj")
    'model.layers.3.self_attn.q_proj'
    >>> text_module_name("model.vision_tower.encoder.layers.0.self_attn.q_proj") is None
    True
    """
    for part in _NOT_TEXT:
        if name.startswith(part) or f".{part}" in name:
            return None
    for prefix, replacement in _TEXT_MODEL_PREFIXES:
        if name.startswith(prefix):
            return replacement + name[len(prefix) :]
    return name


@dataclass
class LoraModule:
    """One adapted linear layer, in peft's layout (Hugging Face module name, unpermuted)."""

    name: str
    """e.g. ``model.layers.0.self_attn.q_proj``."""
    a: np.ndarray
    """``lora_A``: rank x in."""
    b: np.ndarray
    """``lora_B``: out x rank."""
    scale: float
    """What peft multiplies ``b @ a`` by (alpha / r, or alpha / sqrt(r) with rsLoRA)."""

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def delta(self) -> np.ndarray:
        """The change this adapter makes to the weight (out x in)."""
        return (self.b @ self.a) * np.float32(self.scale)


@dataclass
class PeftAdapter:
    path: Path
    config: dict
    modules: list[LoraModule]
    alpha: float
    r: int
    base_model: str | None = None


@dataclass
class GGUFLoraTensor:
    """One adapted weight, named and laid out as in the base GGUF."""

    base_name: str
    """e.g. ``blk.0.attn_q`` (the base tensor is ``blk.0.attn_q.weight``)."""
    module: LoraModule
    b: np.ndarray
    """``lora_B`` with its rows in the base GGUF's order (permuted for llama Q/K)."""

    @property
    def a(self) -> np.ndarray:
        return self.module.a

    def delta(self) -> np.ndarray:
        """The weight change in the base GGUF's row order."""
        return (self.b @ self.module.a) * np.float32(self.module.scale)


@dataclass
class LoraExport:
    path: Path
    arch: str
    alpha: float
    rank: int
    n_tensors: int
    modules: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading a peft adapter


def _pattern_value(patterns: dict, module: str, default):
    for key, value in (patterns or {}).items():
        if module == key or re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_config_types(config: dict, path: Path) -> None:
    """The fields that end up in the GGUF's metadata have the types peft writes: a string
    ``lora_alpha`` must not reach ``adapter.lora.alpha`` (llama.cpp aborts on it)."""
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if value is not None and not (_is_number(value) and value >= 0):
            raise ExportError(
                f"{path}: '{key}' must be a non-negative number, not {json.dumps(value)[:60]}",
                hint="fix the adapter config or train again",
            )
    for key in ("alpha_pattern", "rank_pattern"):
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(_is_number(v) and v >= 0 for v in value.values()):
            raise ExportError(
                f"{path}: '{key}' must map module names to numbers",
                hint="fix the adapter config or train again",
            )


def _read_adapter_config(adapter_dir: Path) -> tuple[dict, Path]:
    """(the checked config of a plain-LoRA peft folder, its weights file)."""
    config_path = adapter_dir / "adapter_config.json"
    weights = next((adapter_dir / n for n in ADAPTER_WEIGHTS if (adapter_dir / n).is_file()), None)
    if not adapter_dir.is_dir() or not config_path.is_file() or weights is None:
        raise ExportError(
            f"no adapter in {adapter_dir} (adapter_config.json and adapter_model.safetensors)",
            hint="export a completed training run ('charlite train NAME' writes one)",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{config_path} is not readable JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ExportError(f"{config_path} is not a peft adapter config (not a JSON object)")
    _check_config_types(config, config_path)
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ExportError(f"not supported yet: {peft_type} adapters (only LoRA)")
    if config.get("use_dora"):
        raise ExportError("not supported yet: DoRA adapters (llama.cpp loads plain LoRA)")
    return config, weights


def _lora_pairs(tensors: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Module name -> {"A": lora_A, "B": lora_B}; any other tensor is not supported."""
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        stripped = key
        for prefix in _PREFIXES:
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix) :]
        m = _LORA_KEY.match(stripped)
        if not m:
            if "lora_embedding" in key:
                raise ExportError("not supported yet: LoRA on the token embeddings")
            raise ExportError(
                f"not supported yet: the adapter also stores full weights ({key})",
                hint="train without modules_to_save",
            )
        pairs.setdefault(m.group("module"), {})[m.group("ab")] = value
    return pairs


def read_peft_adapter(adapter_dir: Path) -> PeftAdapter:
    """The LoRA matrices of a peft ``save_pretrained`` folder, as float32 numpy arrays."""
    adapter_dir = Path(adapter_dir)
    config, weights = _read_adapter_config(adapter_dir)
    r = int(config.get("r") or 0)
    alpha = float(config.get("lora_alpha") or r or 1)
    rslora = bool(config.get("use_rslora"))
    pairs = _lora_pairs(read_safetensors(weights))
    modules = []
    for name, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise ExportError(f"{weights}: {name} has lora_{''.join(pair)} but not its partner")
        a, b = pair["A"], pair["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ExportError(
                f"{weights}: {name} has lora_A {list(a.shape)} and lora_B {list(b.shape)}, which do not fit"
            )
        rank = int(a.shape[0])
        m_alpha = float(_pattern_value(config.get("alpha_pattern"), name, alpha))
        scale = m_alpha / math.sqrt(rank) if rslora else m_alpha / rank
        modules.append(LoraModule(name, a, b, scale))
    if not modules:
        raise ExportError(f"{weights} holds no LoRA weights")
    return PeftAdapter(
        adapter_dir,
        config,
        modules,
        alpha,
        r or modules[0].rank,
        config.get("base_model_name_or_path"),
    )


# ---------------------------------------------------------------------------------------------
# Matching the base GGUF


def _model_arch(arch: str):
    import gguf

    for key, name in gguf.MODEL_ARCH_NAMES.items():
        if name == arch:
            return key
    raise ExportError(f"not supported yet: {arch}")


def gguf_lora_tensors(
    adapter: PeftAdapter, base: BaseInfo, expected_arch: str | None = None
) -> list[GGUFLoraTensor]:
    """The adapter's matrices named and laid out for ``base``; any mismatch is an ExportError."""
    import gguf

    if expected_arch:
        want = HF_TO_GGUF_ARCH.get(expected_arch, expected_arch)
        if want != base.arch:
            raise ExportError(
                f"the adapter was trained on a {expected_arch} model but {base.path.name} is {base.arch}",
                hint="export against the base the run was trained on",
            )
    names = gguf.get_tensor_name_map(_model_arch(base.arch), base.n_blocks)
    out: list[GGUFLoraTensor] = []
    problems: list[str] = []
    for module in adapter.modules:
        text_name = text_module_name(module.name)
        if text_name is None:
            continue
        gname = names.get_name(text_name)
        if gname is None:
            block = re.search(r"\.layers\.(\d+)\.", module.name)
            if block and int(block.group(1)) >= base.n_blocks:
                problems.append(
                    f"{module.name} is in layer {block.group(1)} but {base.path.name} has {base.n_blocks} layers"
                )
            else:
                problems.append(f"{module.name} has no counterpart in a {base.arch} GGUF")
            continue
        shape = base.shapes.get(f"{gname}.weight")
        if shape is None:
            problems.append(
                f"{base.path.name} has no tensor {gname}.weight (adapter module {module.name})"
            )
            continue
        n_in, n_out = int(module.a.shape[1]), int(module.b.shape[0])
        if len(shape) != 2 or shape[0] != n_in or shape[1] != n_out:
            problems.append(
                f"{module.name} is {n_out}x{n_in} in the adapter but {gname}.weight is "
                f"{'x'.join(str(s) for s in reversed(shape))} in {base.path.name}"
            )
            continue
        b = module.b
        if base.permutes_qk and gname.endswith(".attn_q"):
            b = permute_qk(b, base.head_count)
        elif base.permutes_qk and gname.endswith(".attn_k"):
            b = permute_qk(b, base.head_count_kv)
        out.append(GGUFLoraTensor(gname, module, b))
    if not out and not problems:
        raise ExportError(f"the adapter changes no layer of the text model in {base.path.name}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ExportError(
            f"the adapter does not fit {base.path.name}: {problems[0]}{more}",
            hint="it was trained on another base; export against the base the run was trained on",
        )
    order = {name: i for i, name in enumerate(base.shapes)}
    out.sort(key=lambda t: order.get(f"{t.base_name}.weight", 0))
    return out


# ---------------------------------------------------------------------------------------------
# Writing


def write_gguf_lora(
    adapter: PeftAdapter,
    base: BaseInfo,
    out: Path,
    *,
    dtype: str = "f16",
    expected_arch: str | None = None,
    name: str | None = None,
) -> LoraExport:
    """Write ``adapter`` as a GGUF LoRA for ``base`` at ``out`` (atomically)."""
    import gguf

    if dtype not in ("f16", "f32"):
        raise ExportError(f"unknown adapter type '{dtype}'", hint="use f16 or f32")
    tensors = gguf_lora_tensors(adapter, base, expected_arch)
    alpha = float(adapter.alpha)
    with atomic_path(Path(out)) as tmp:
        writer = gguf.GGUFWriter(str(tmp), base.arch)
        try:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
            if name:
                writer.add_name(name)
            for t in tensors:
                rank = t.module.rank
                llama_scale = alpha / rank if alpha else 1.0
                b = t.b
                factor = t.module.scale / llama_scale
                if not math.isclose(factor, 1.0, rel_tol=1e-6):
                    b = b * np.float32(factor)  # rank/alpha patterns, rsLoRA: fold into B
                a = t.a
                if dtype == "f16" and max(np.abs(a).max(), np.abs(b).max()) < 6.0e4:
                    a, b = a.astype(np.float16), b.astype(np.float16)
                else:
                    a, b = a.astype(np.float32), b.astype(np.float32)
                writer.add_tensor(f"{t.base_name}.weight.lora_a", np.ascontiguousarray(a))
                writer.add_tensor(f"{t.base_name}.weight.lora_b", np.ascontiguousarray(b))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return LoraExport(
        Path(out), base.arch, alpha, adapter.r, len(tensors), [t.base_name for t in tensors]
    )

"""Engines: Unsloth (CUDA GPU, 4-bit QLoRA) or transformers + peft (anywhere).

Both give a peft LoRA model over the same projections, feed the same TRL trainer and save the
same adapter format. ``auto`` picks Unsloth when a CUDA GPU and the ``unsloth`` package are both
present, else peft, and says why.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from charlite.errors import TrainingError
from charlite.train.config import TrainConfig

TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "qkv_proj",  # Phi-3: Q, K and V in one projection
    "o_proj",
    "gate_proj",
    "up_proj",
    "gate_up_proj",  # Phi-3: gate and up in one projection
    "down_proj",
)


@dataclass(frozen=True)
class EngineChoice:
    engine: str
    """``unsloth`` or ``peft``."""
    device: str
    """``cuda``, ``mps`` or ``cpu``."""
    reason: str

    def line(self) -> str:
        return f"engine: {self.engine} on {self.device} ({self.reason})"


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def detect_device() -> str:
    """``cuda``, ``mps`` or ``cpu``: where training would run."""
    return "cuda" if cuda_available() else ("mps" if mps_available() else "cpu")


def choose_engine(requested: str) -> EngineChoice:
    device = detect_device()
    cuda = device == "cuda"
    if requested == "unsloth":
        if not cuda:
            raise TrainingError(
                "--engine unsloth needs an NVIDIA GPU with CUDA, and this machine has none",
                hint="use --engine peft (or auto), which trains on any machine",
            )
        if not unsloth_installed():
            raise TrainingError(
                "--engine unsloth: the unsloth package is not installed",
                hint="pip install 'charlite[gpu]', or use --engine peft",
            )
        return EngineChoice("unsloth", "cuda", "asked for")
    if requested == "peft":
        return EngineChoice("peft", device, "asked for")
    if requested != "auto":
        raise TrainingError(f"unknown engine '{requested}'", hint="use auto, unsloth or peft")
    if cuda and unsloth_installed():
        return EngineChoice("unsloth", "cuda", "CUDA GPU and unsloth found")
    if cuda:
        return EngineChoice("peft", "cuda", "CUDA GPU found, unsloth not installed")
    return EngineChoice("peft", device, f"no CUDA GPU; training on {device}")


def precision(device: str, engine: str = "peft") -> str:
    """float32 on a CPU (and MPS, where mixed precision training is not dependable);
    bfloat16 on GPUs that have it, else float16.

    With Unsloth, Unsloth's own answer counts: on T4 and V100 torch says bf16 works (emulated)
    but Unsloth loads float16 there, and TRL would then refuse bf16 training."""
    if device != "cuda":
        return "float32"
    if engine == "unsloth":
        from unsloth import is_bfloat16_supported

        return "bfloat16" if is_bfloat16_supported() else "float16"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def lora_settings(model: Any, config: TrainConfig) -> dict[str, Any]:
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in TARGET_MODULES if t in present]
    if not targets:
        raise TrainingError(
            "the base model has none of the projections LoRA targets "
            f"({', '.join(TARGET_MODULES)})",
            hint="use a llama-style base (llama, qwen2, mistral, gemma, smollm)",
        )
    return {
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": targets,
    }


def load_peft(base_path: str, config: TrainConfig, device: str):
    """A base in full precision (fp32 on a CPU) with fresh LoRA layers; the base is frozen."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, precision(device))
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if device != "cpu":
        model.to(device)
    settings = lora_settings(model, config)
    lora = LoraConfig(task_type="CAUSAL_LM", bias="none", **settings)
    model = get_peft_model(model, lora)
    return model, tokenizer, settings


def load_unsloth(base_path: str, config: TrainConfig):
    """Unsloth's FastLanguageModel: 4-bit base, the same LoRA settings, its gradient checkpointing."""
    from unsloth import FastLanguageModel  # imported before transformers by the trainer

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=base_path,
        max_seq_length=config.max_seq_len,
        dtype=None,
        load_in_4bit=config.load_in_4bit,
    )
    settings = lora_settings(model, config)
    model = FastLanguageModel.get_peft_model(
        model,
        r=settings["r"],
        lora_alpha=settings["lora_alpha"],
        lora_dropout=settings["lora_dropout"],
        target_modules=settings["target_modules"],
        bias="none",
        use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False,
        random_state=config.seed,
    )
    return model, tokenizer, settings

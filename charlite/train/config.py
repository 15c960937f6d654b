"""The training settings: one typed config whose fields are the ``charlite train`` flags.

Precedence, lowest first: the machine's defaults (small and quick on a CPU, sized for a 7-8B
base on a 24 GB GPU), then ``--config FILE`` (YAML with the same field names), then flags.

>>> cfg = TrainConfig.from_sources(file_values={"rank": 8, "lr": 1e-3}, flags={"lr": 5e-4})
>>> cfg.rank, cfg.lr
(8, 0.0005)
>>> cfg.resolved("cpu").max_seq_len
1024
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from charlite.errors import TrainingError
from charlite.files import require_regular_file

Engine = Literal["auto", "unsloth", "peft"]
Device = Literal["cpu", "cuda", "mps"]

# Defaults that depend on the machine; a field left None takes its value from here.
MACHINE_DEFAULTS: dict[str, dict[str, Any]] = {
    # A laptop CPU: the 135M embedded base, a few minutes per run.
    "cpu": {
        "lr": 1e-3,
        "warmup": 0.0,
        "max_seq_len": 1024,
        "batch_size": 1,
        "grad_accum": 2,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_steps": 50,
    },
    # A 24 GB GPU and a 7-8B base (4-bit with Unsloth).
    "cuda": {
        "lr": 2e-4,
        "warmup": 0.03,
        "max_seq_len": 2048,
        "batch_size": 2,
        "grad_accum": 4,
        "gradient_checkpointing": True,
        "logging_steps": 5,
        "save_steps": 100,
    },
    "mps": {
        "lr": 5e-4,
        "warmup": 0.0,
        "max_seq_len": 1024,
        "batch_size": 1,
        "grad_accum": 4,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_steps": 50,
    },
}


class TrainConfig(BaseModel):
    """Every setting of a training run. Each field is also a ``charlite train`` flag."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base: str = Field(
        "embedded",
        description="Base model: embedded (the bundled SmolLM2-135M), gguf:PATH or hf:ID_OR_PATH.",
    )
    engine: Engine = Field(
        "auto",
        description="unsloth (CUDA GPU, 4-bit), peft (anywhere) or auto (unsloth when it can run).",
    )
    dataset: str = Field("default", description="The character's dataset to train on.")
    epochs: float = Field(3.0, gt=0, description="Passes over the dataset.")
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many optimizer steps (overrides --epochs)."
    )
    lr: float | None = Field(
        None, gt=0, description="Learning rate (default: 1e-3 on a CPU, 2e-4 on a GPU)."
    )
    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    alpha: float = Field(32, gt=0, description="LoRA alpha; the update is scaled by alpha/rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    max_seq_len: int | None = Field(
        None,
        ge=64,
        description="Tokens per sequence; longer dialogues are split at turn boundaries "
        "(default: 1024 on a CPU, 2048 on a GPU).",
    )
    batch_size: int | None = Field(
        None, ge=1, description="Sequences per device and step (default: 1 on a CPU, 2 on a GPU)."
    )
    grad_accum: int | None = Field(
        None, ge=1, description="Gradient accumulation steps (default: 2 on a CPU, 4 on a GPU)."
    )
    packing: bool = Field(
        True,
        description="Pack several examples into each sequence (no padding; each example still "
        "attends only to itself).",
    )
    warmup: float | None = Field(
        None,
        ge=0,
        description="Warm-up steps, or a fraction of all steps when below 1 "
        "(default: none on a CPU, 0.03 on a GPU).",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate schedule."
    )
    seed: int = Field(42, description="Random seed (data order, LoRA initialisation).")
    logging_steps: int | None = Field(
        None, ge=1, description="Log the loss every N steps to metrics.jsonl."
    )
    save_steps: int | None = Field(
        None, ge=1, description="Save a resumable checkpoint every N steps (Ctrl-C also saves one)."
    )
    gradient_checkpointing: bool | None = Field(
        None, description="Trade compute for memory (default: on with a GPU, off on a CPU)."
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for training (default: torch's choice, all cores)."
    )
    knowledge_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of dialogues whose questions carry recalled profile paragraphs, as "
        "chat shows them with --knowledge (the rest teach recall from memory).",
    )
    load_in_4bit: bool = Field(True, description="Unsloth only: load the base in 4 bits (QLoRA).")
    allow_download: bool = Field(
        False, description="hf: bases only: allow downloading from the Hugging Face Hub."
    )
    base_gguf: str | None = Field(
        None,
        description="hf: bases only: a GGUF of the same model that export builds on "
        "(no conversion needed).",
    )

    @field_validator("base_gguf")
    @classmethod
    def _absolute_base_gguf(cls, value: str | None) -> str | None:
        # export runs later, perhaps from another folder: keep the path it meant
        return str(Path(value).expanduser().resolve()) if value else value

    # ------------------------------------------------------------------------------------------

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {name: f.description or "" for name, f in cls.model_fields.items()}

    @classmethod
    def from_sources(
        cls, file_values: dict[str, Any] | None = None, flags: dict[str, Any] | None = None
    ) -> TrainConfig:
        """Defaults, then the file's values, then the flags that were given (None = not given)."""
        values: dict[str, Any] = {}
        values.update(file_values or {})
        values.update({k: v for k, v in (flags or {}).items() if v is not None})
        return cls.validated(values, where="settings")

    @classmethod
    def validated(cls, values: dict[str, Any], where: str) -> TrainConfig:
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err.get("loc", ())) or "?"
            if err.get("type") == "extra_forbidden":
                known = ", ".join(sorted(cls.model_fields))
                raise TrainingError(
                    f"{where}: unknown setting '{field}'", hint=f"known settings: {known}"
                ) from None
            raise TrainingError(f"{where}: {field}: {err.get('msg', 'invalid value')}") from None

    def resolved(self, device: Device | str) -> TrainConfig:
        """A copy with every machine-dependent field (None) filled in for ``device``."""
        defaults = MACHINE_DEFAULTS.get(device, MACHINE_DEFAULTS["cpu"])
        values = self.model_dump()
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        return TrainConfig(**values)


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The settings in a YAML file, keys as field names (``max-seq-len`` and ``max_seq_len``)."""
    import yaml

    path = Path(path)
    if path.exists():  # a FIFO would block the read, a device never ends
        require_regular_file(path, error=TrainingError, what="config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainingError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise TrainingError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainingError(
            f"config file {path} must be a mapping of settings", hint="e.g. 'rank: 8' per line"
        )
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    TrainConfig.validated(values, where=f"config file {path}")  # report problems with the file name
    return values

"""Helpers for the export tests: run folders in the format of the training issue, peft adapters.

A run folder is ``characters/SLUG/runs/RUN/`` with ``manifest.json`` (format 1, see
``charlite.train.runs``) and ``adapter/`` (peft ``adapter_model.safetensors`` +
``adapter_config.json``). :func:`random_adapter` writes a real peft-format adapter with numpy
(no torch) for the tests that only need shapes; the trained one comes from ``test_export.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

PROJECTIONS = {
    "self_attn.q_proj": ("hidden", "hidden"),
    "self_attn.k_proj": ("hidden", "kv"),
    "self_attn.v_proj": ("hidden", "kv"),
    "self_attn.o_proj": ("hidden", "hidden"),
    "mlp.gate_proj": ("hidden", "ffn"),
    "mlp.up_proj": ("hidden", "ffn"),
    "mlp.down_proj": ("ffn", "hidden"),
}
SMOLLM = {"hidden": 576, "kv": 192, "ffn": 1536, "layers": 30}


def random_adapter(
    folder: Path,
    *,
    dims: dict | None = None,
    r: int = 4,
    alpha: float = 8.0,
    std: float = 1e-3,
    seed: int = 0,
) -> Path:
    """A peft LoRA adapter with small random weights for a llama model of ``dims``."""
    from safetensors.numpy import save_file

    dims = dims or SMOLLM
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(dims["layers"]):
        for proj, (n_in, n_out) in PROJECTIONS.items():
            key = f"base_model.model.model.layers.{layer}.{proj}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((r, dims[n_in])) * std).astype(
                np.float32
            )
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((dims[n_out], r)) * std).astype(
                np.float32
            )
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": [p.split(".")[1] for p in PROJECTIONS],
        "base_model_name_or_path": "test",
        "use_rslora": False,
        "use_dora": False,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def write_run(
    home: Path,
    slug: str,
    run_id: str,
    *,
    adapter: Path | None,
    base_gguf: Path | None,
    base_dir: Path | None = None,
    base_spec: str = "embedded",
    architecture: str = "llama",
    status: str = "completed",
    chat_template: str | None = None,
    created: str = "2025-01-01T12:00:00+00:00",
) -> Path:
    """A run folder as ``charlite train`` leaves it; ``adapter`` is copied into ``adapter/``."""
    run = home / "characters" / slug / "runs" / run_id
    run.mkdir(parents=True, exist_ok=True)
    if adapter is not None:
        shutil.copytree(adapter, run / "adapter", dirs_exist_ok=True)
    manifest = {
        "format": 1,
        "kind": "charlite-run",
        "run_id": run_id,
        "character": {"slug": slug},
        "status": status,
        "created": created,
        "finished": created if status == "completed" else None,
        "base": {
            "spec": base_spec,
            "hash": "0123456789abcdef",
            "gguf": str(base_gguf) if base_gguf else None,
            "path": str(base_dir) if base_dir else None,
            "architecture": architecture,
        },
        "lora": {"r": 8, "alpha": 16},
        "chat_template": chat_template,
        "eos_token": "<|im_end|>",
    }
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return run


def leftovers(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative), to show nothing partial was left."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run_export(*args):
    """``charlite export ARGS`` in-process: the result and its ``error:`` lines."""
    from click.testing import CliRunner

    from charlite.cli import cli

    result = CliRunner().invoke(cli, ["export", *args])
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    return result, errors


def assert_one_error_line(result, errors, *needles) -> None:
    """Exit 1 with exactly one ``error:`` line holding every needle, and no traceback."""
    assert result.exit_code == 1, result.output
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in errors[0], errors[0]

"""A merged model: the base GGUF's weights plus the LoRA delta, as one GGUF, then quantized.

:func:`merge_gguf` reads the base tensor by tensor (dequantizing with ``gguf.quants``), adds
``scale * B @ A`` (rows already in the base's Q/K order) to the adapted weights and writes an
F16 (or F32) GGUF that keeps every key-value field of the base: tokenizer, merges, special
tokens, chat template. :func:`quantize` shrinks it with llama.cpp's own quantizer.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from charlite.errors import ExportError
from charlite.export.ggufio import copy_kv
from charlite.files import atomic_path

# --quant name -> (file-name tag, llama_ftype)
QUANTS: dict[str, tuple[str, int]] = {
    "q4_k_m": ("Q4_K_M", 15),
    "q5_k_m": ("Q5_K_M", 17),
    "q8_0": ("Q8_0", 7),
    "f16": ("F16", 1),
}


def check_quant(quant: str) -> str:
    q = (quant or "").strip().lower()
    if q not in QUANTS:
        raise ExportError(f"unknown quant type '{quant}'", hint=f"use one of {', '.join(QUANTS)}")
    return q


def merge_gguf(
    base_path: Path,
    tensors: Sequence,
    out: Path,
    *,
    out_type: str = "f16",
    chat_template: str | None = None,
) -> Path:
    """Write ``base + LoRA`` to ``out`` (atomically).

    ``chat_template`` is written when the base has none (a base model trained with a fallback
    template), so the merged file is chatted with the way it was trained.

    ``tensors`` are :class:`~charlite.export.gguf_lora.GGUFLoraTensor` (or anything with
    ``base_name`` and ``delta()`` giving out x in in the base's row order). 1-D tensors (norms)
    stay F32; the rest become ``out_type``.
    """
    import gguf
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter

    if out_type not in ("f16", "f32"):
        raise ExportError(f"unknown merge type '{out_type}'", hint="use f16 or f32")
    reader = GGUFReader(str(base_path), "r")
    arch = reader.fields["general.architecture"].contents()
    deltas = {f"{t.base_name}.weight": t for t in tensors}
    missing = [n for n in deltas if n not in {t.name for t in reader.tensors}]
    if missing:
        raise ExportError(f"{Path(base_path).name} has no tensor {missing[0]} to merge into")
    float16 = out_type == "f16"
    with atomic_path(Path(out)) as tmp:
        writer = GGUFWriter(str(tmp), arch)
        try:
            copy_kv(reader, writer, skip={"general.architecture", "general.file_type"})
            if chat_template and "tokenizer.chat_template" not in reader.fields:
                writer.add_chat_template(chat_template)
            ftype = gguf.LlamaFileType.MOSTLY_F16 if float16 else gguf.LlamaFileType.ALL_F32
            writer.add_file_type(int(ftype))
            plan = []
            for t in reader.tensors:
                shape = tuple(int(x) for x in reversed(t.shape))  # numpy order
                dtype = np.float16 if float16 and len(shape) > 1 else np.float32
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                writer.add_tensor_info(t.name, shape, np.dtype(dtype), nbytes)
                plan.append((t, shape, dtype))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for t, shape, dtype in plan:
                if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
                    w = np.asarray(t.data, dtype=np.float32).reshape(shape)
                else:
                    w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
                lora = deltas.get(t.name)
                if lora is not None:
                    w = w.astype(np.float32) + lora.delta().astype(np.float32)
                writer.write_tensor_data(np.ascontiguousarray(w.astype(dtype)))
            writer.flush()
        finally:
            writer.close()
    return Path(out)


def quantize(
    src: Path, dst: Path, quant: str, *, threads: int | None = None, verbose: bool = False
) -> Path:
    """Quantize a F16/F32 GGUF to ``quant`` with llama.cpp (atomically; its printing silenced)."""
    import llama_cpp

    from charlite.backends.llamacpp import quiet_native

    quant = check_quant(quant)
    _, ftype = QUANTS[quant]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or max(1, os.cpu_count() or 1)
    with atomic_path(Path(dst)) as tmp:
        with quiet_native(not verbose):
            rc = llama_cpp.llama_model_quantize(
                str(src).encode("utf-8"), str(tmp).encode("utf-8"), ctypes.byref(params)
            )
        if rc != 0 or not tmp.exists():
            raise ExportError(
                f"llama.cpp could not quantize {Path(src).name} to {quant} (code {rc})"
            )
    return Path(dst)

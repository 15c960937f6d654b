"""Helpers for tests and benchmarks (not part of the installed package)."""

from __future__ import annotations

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "born": {"type": "integer"},
        "instruments": {
            "type": "array",
            "items": {"type": "string", "maxLength": 16},
            "maxItems": 3,
        },
    },
    "required": ["name", "born", "instruments"],
}
"""A small JSON schema whose every value is bounded: the batching tests decode it under a
grammar beside free-text neighbours."""


def write_random_adapter(base, out, seed: int = 0, rank: int = 4, scale: float = 0.1):
    """A real GGUF LoRA file for ``base`` with random weights (for hot-swap and cache tests).

    It is a genuine adapter as llama.cpp loads it (``general.type=adapter``, ``lora_a``/``lora_b``
    pairs on attn_q/attn_v/ffn_up of every block); only its values are random, large enough to
    change greedy output.
    """
    import gguf
    import numpy as np

    from charlite.gguf import check_gguf, tensor_shapes

    arch = check_gguf(base).architecture
    shapes = tensor_shapes(base)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for name, dims in shapes.items():
        if not name.endswith((".attn_q.weight", ".attn_v.weight", ".ffn_up.weight")):
            continue
        n_in, n_out = dims
        a = (rng.standard_normal((rank, n_in)) * scale).astype(np.float32)
        b = (rng.standard_normal((n_out, rank)) * scale).astype(np.float32)
        writer.add_tensor(f"{name}.lora_a", a)
        writer.add_tensor(f"{name}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out

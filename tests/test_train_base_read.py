"""Preparing a base from a GGUF parses the file's metadata once (charlite/train/base.py): the
reader transformers asks for three times (tokenizer, config, weights) is shared inside the
preparation, and only for that file."""

from __future__ import annotations

import pytest

gguf = pytest.importorskip("gguf")


def test_the_gguf_is_parsed_once_inside_the_preparation(embedded_path, tmp_path):
    from charlite.train.base import _gguf_read_once

    original = gguf.GGUFReader
    with _gguf_read_once(embedded_path):
        first = gguf.GGUFReader(str(embedded_path))
        assert gguf.GGUFReader(embedded_path) is first  # str or Path, the same file
        assert isinstance(first, original) and first.fields
        with pytest.raises(OSError):  # another file goes to the real reader
            gguf.GGUFReader(tmp_path / "missing.gguf")
    assert gguf.GGUFReader is original


def test_the_reader_is_restored_after_a_failure(embedded_path):
    from charlite.train.base import _gguf_read_once

    original = gguf.GGUFReader
    with pytest.raises(RuntimeError), _gguf_read_once(embedded_path):
        raise RuntimeError("conversion failed")
    assert gguf.GGUFReader is original

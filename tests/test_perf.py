"""Correctness of the speed features: persona prefix cache, KV reuse, adapter hot-swap."""

from __future__ import annotations

import pytest

from charlite.backends import GenParams
from charlite.persona_cache import PersonaCache, cache_key
from charlite.spec import parse_spec

GREEDY = GenParams(temperature=0.0, max_tokens=24, seed=7, repeat_penalty=1.1)
QUESTION = "Where were you born, and who taught you?"


def _backend(**kw):
    from charlite.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(parse_spec("embedded"), **kw)


def _session(profile, backend, **kw):
    from charlite.chat import ChatSession

    return ChatSession(profile, backend, params=GREEDY, **kw)


@pytest.fixture
def beethoven():
    from charlite.characters import get_profile

    return get_profile("beethoven")


@pytest.mark.slow
def test_restored_persona_cache_gives_the_cold_reply(beethoven):
    backend = _backend()
    backend.llm.reset()
    cold_session = _session(beethoven, backend)
    assert cold_session.prime() == "evaluated"
    cold = cold_session.reply(QUESTION)
    assert len(PersonaCache().entries()) == 1

    backend.llm.reset()  # as a new process would start: nothing in the context
    warm_session = _session(beethoven, backend)
    assert warm_session.prime() == "restored"
    warm = warm_session.reply(QUESTION)
    assert warm == cold and cold.strip()


@pytest.mark.slow
def test_changed_profile_invalidates_its_cache_entry(beethoven):
    backend = _backend()
    backend.llm.reset()
    assert _session(beethoven, backend).prime() == "evaluated"
    changed = beethoven.model_copy(deep=True)
    changed.paragraphs[0].text += " He liked long walks."
    backend.llm.reset()
    assert _session(changed, backend).prime() == "evaluated"  # not restored from the old entry
    assert len(PersonaCache().entries()) == 2


@pytest.mark.slow
def test_corrupt_cache_file_is_ignored_and_rebuilt(beethoven):
    backend = _backend()
    backend.llm.reset()
    session = _session(beethoven, backend)
    session.prime()
    [entry] = PersonaCache().entries()
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])  # truncated
    backend.llm.reset()
    assert _session(beethoven, backend).prime() == "evaluated"
    [entry] = PersonaCache().entries()
    entry.write_bytes(data[:100] + bytes(len(data) - 100))  # right length, wrong bytes
    backend.llm.reset()
    assert _session(beethoven, backend).prime() == "evaluated"
    backend.llm.reset()
    assert _session(beethoven, backend).prime() == "restored"


def test_cache_folder_never_grows_past_its_bound(tmp_path):
    cache = PersonaCache(tmp_path, max_bytes=10_000)
    for i in range(20):
        cache.save(cache_key(__file__, None, [i, i + 1]), [i, i + 1], bytes(3000))
        assert cache.size() <= 10_000
    assert 1 <= len(cache.entries()) <= 3
    assert cache.load(cache_key(__file__, None, [19, 20])) is not None  # newest kept


@pytest.mark.slow
def test_turn_with_kv_reuse_equals_fresh_evaluation(beethoven):
    backend = _backend()
    session = _session(beethoven, backend, use_persona_cache=False)
    session.reply("Good day to you.")
    before = backend.llm.evaluated
    reused = session.reply(QUESTION)
    evaluated = backend.llm.evaluated - before
    messages = session.messages()[:-1]  # the prompt of the second turn
    assert evaluated < len(backend.prompt_tokens(messages)) // 2  # only the new part was evaluated

    backend.llm.reset()  # fresh evaluation of the very same prompt
    fresh = backend.complete(messages, GREEDY).text
    assert reused == fresh


@pytest.mark.slow
def test_switch_swaps_adapter_and_matches_a_fresh_load(beethoven, random_adapters):
    from charlite.backends import llamacpp

    first, second = random_adapters
    shared = _backend(lora=first)
    one = shared.complete([{"role": "user", "content": QUESTION}], GREEDY).text
    shared.set_adapter(second)
    swapped = shared.complete([{"role": "user", "content": QUESTION}], GREEDY).text
    shared.set_adapter(None)
    plain = shared.complete([{"role": "user", "content": QUESTION}], GREEDY).text
    assert len({one, swapped, plain}) == 3, (one, swapped, plain)  # each adapter changes output

    llamacpp.unload_all()  # a fresh load of base + second adapter
    fresh = _backend(lora=second).complete([{"role": "user", "content": QUESTION}], GREEDY).text
    assert swapped == fresh


@pytest.mark.slow
def test_adapter_for_another_base_is_refused_before_llama_cpp(tmp_path, embedded_path):
    import gguf
    import numpy as np

    from charlite.errors import ModelError

    bad = tmp_path / "other-base.gguf"
    writer = gguf.GGUFWriter(str(bad), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 4.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 1024), np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((1024, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError, match="does not fit"):
        _backend(lora=bad)

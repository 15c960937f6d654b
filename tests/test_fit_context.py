"""roleplay.fit_context: the one rule that fits a conversation to a model's context."""

from __future__ import annotations

import pytest

from charlite import roleplay
from charlite.backends.llamacpp import LlamaCppBackend
from charlite.profile import Scene
from charlite.roleplay import fit_context
from charlite.spec import parse_spec


def _count(text: str) -> int:
    return max(1, len(text) // 4)


def _conversation(exchanges: int, size: int = 80) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "S" * 200}]
    for i in range(exchanges):
        msgs.append({"role": "user", "content": f"Q{i} " + "q" * size})
        msgs.append({"role": "assistant", "content": f"A{i} " + "a" * size})
    msgs.append({"role": "user", "content": "last question"})
    return msgs


def _estimate(messages: list[dict[str, str]]) -> int:
    system, *rest = messages
    return (
        _count(system["content"])
        + roleplay.SYSTEM_OVERHEAD
        + sum(_count(m["content"]) + roleplay.MESSAGE_OVERHEAD for m in rest)
    )


def test_a_short_conversation_is_kept_whole():
    msgs = _conversation(2)
    fit = fit_context(msgs, count_tokens=_count, n_ctx=2048, max_tokens=200)
    assert fit.messages == msgs and fit.first == 0 and fit.fits
    assert fit.tokens == _estimate(msgs)
    assert fit.budget == 2048 - 200 - roleplay.PROMPT_SLACK


def test_the_oldest_turns_go_and_the_history_starts_with_a_user_turn():
    msgs = _conversation(40)
    fit = fit_context(msgs, count_tokens=_count, n_ctx=1024, max_tokens=200)
    assert fit.first > 0 and fit.fits
    assert fit.messages[0] == msgs[0]
    assert fit.messages[1]["role"] == "user"
    assert fit.messages[1:] == msgs[1 + fit.first :]
    assert fit.messages[-1]["content"] == "last question"
    assert _estimate(fit.messages) == fit.tokens <= 1024 - 200 - roleplay.PROMPT_SLACK
    # as many as fit: one more exchange would not
    assert _estimate([msgs[0], *msgs[fit.first - 1 :]]) > fit.budget


def test_a_target_drops_a_block_and_a_later_call_keeps_the_prefix():
    msgs = _conversation(40)
    whole = fit_context(msgs, count_tokens=_count, n_ctx=1024, max_tokens=200)
    block = fit_context(msgs, count_tokens=_count, n_ctx=1024, max_tokens=200, target=0.6)
    assert block.first > whole.first
    assert block.tokens <= block.budget * 0.6 + _count(msgs[0]["content"]) + 8
    # one more exchange: still fits, so nothing more is dropped and the prefix stays
    longer = msgs + [{"role": "assistant", "content": "Yes."}, {"role": "user", "content": "Go on"}]
    again = fit_context(
        longer, count_tokens=_count, n_ctx=1024, max_tokens=200, first=block.first, target=0.6
    )
    assert again.first == block.first
    assert again.messages[: len(block.messages)] == block.messages


def test_a_leading_assistant_message_is_dropped():
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "assistant", "content": "Welcome!"},
        {"role": "user", "content": "Hello"},
    ]
    fit = fit_context(msgs, count_tokens=_count, n_ctx=512, max_tokens=100)
    assert [m["role"] for m in fit.messages] == ["system", "user"] and fit.first == 1


def test_recall_goes_with_the_newest_user_turn_when_it_fits():
    msgs = _conversation(3)
    recalled = ["He was born in Bonn.", "Neefe taught him."]
    fit = fit_context(msgs, count_tokens=_count, n_ctx=2048, max_tokens=200, recalled=recalled)
    assert fit.recalled == recalled
    assert fit.messages[-1]["content"] == roleplay.with_recall("last question", recalled)
    assert fit.messages[:-1] == msgs[:-1]
    assert msgs[-1]["content"] == "last question", "the input is not changed"
    assert fit.tokens == _estimate(msgs) + _count(roleplay.with_recall("", recalled))


def test_recall_that_does_not_fit_is_left_out_and_history_makes_room_for_it():
    msgs = _conversation(3)
    huge = ["x" * 8000]
    fit = fit_context(msgs, count_tokens=_count, n_ctx=1024, max_tokens=200, recalled=huge)
    assert fit.recalled == [] and fit.messages == msgs
    some = ["y" * 2400]  # fits with the question, but not with the whole history
    fit = fit_context(
        _conversation(6), count_tokens=_count, n_ctx=1024, max_tokens=200, recalled=some
    )
    assert fit.recalled == some and fit.first > 0 and fit.fits


def test_recall_is_only_for_a_user_turn():
    msgs = _conversation(1)[:-1]  # ends with the character's reply
    fit = fit_context(msgs, count_tokens=_count, n_ctx=2048, max_tokens=200, recalled=["r"])
    assert fit.recalled == [] and fit.messages == msgs


def test_a_single_message_too_long_does_not_fit():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "w" * 8000}]
    fit = fit_context(msgs, count_tokens=_count, n_ctx=1024, max_tokens=200)
    assert not fit.fits and fit.messages == msgs


@pytest.mark.slow
def test_the_estimate_covers_llama_cpps_own_prompt(charlite_home):
    small = LlamaCppBackend(parse_spec("embedded"), n_ctx=512)
    turns = []
    for i in range(20):
        turns.append(roleplay.Turn("Man", f"Question {i}: what happened in the year 18{i:02d}?"))
        turns.append(roleplay.Turn("Beethoven", f"In 18{i:02d} I wrote music.", "speaking"))
    scene = Scene(location="Vienna", status="At home.")
    system = "You are Beethoven."
    messages = roleplay.to_messages(
        "Beethoven", "Ludwig van Beethoven", scene, turns, system=system
    )
    fit = fit_context(messages, count_tokens=small.count_tokens, n_ctx=512, max_tokens=100)
    assert fit.first > 0 and fit.fits
    real = len(small.prompt_tokens(fit.messages))
    assert real <= fit.tokens + roleplay.PROMPT_SLACK <= 512 - 100

"""SFT examples: the assistant-only loss mask, checked token by token on the embedded model's own
tokenizer (loaded from the GGUF), and the splitting of long dialogues."""

from __future__ import annotations

from collections import Counter

import pytest
from test_train_support import long_record

from charlite import roleplay
from charlite.characters import get_profile
from charlite.errors import DataError
from charlite.experience.schemas import Experience
from charlite.profile import Scene
from charlite.train.examples import (
    IGNORE,
    SCENE_START,
    build_examples,
    render,
    split_conversation,
    tokenize_with_mask,
)

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(embedded_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_path.parent, gguf_file=embedded_path.name)


@pytest.fixture
def tok(tokenizer):
    template = tokenizer.chat_template
    yield tokenizer
    tokenizer.chat_template = template


def small_messages():
    turns = [
        roleplay.Turn("Man", "Where were you born?"),
        roleplay.Turn("Beethoven", "A stranger with questions.", "thinking"),
        roleplay.Turn("Beethoven", "In Bonn, on the Rhine!", "speaking"),
        roleplay.Turn("Man", "And your teacher?"),
        roleplay.Turn("Beethoven", "Neefe taught me first.", "speaking"),
    ]
    return roleplay.to_messages(
        "Beethoven", "Ludwig van Beethoven", Scene(location="Vienna", status="A visit."), turns
    )


def expected_mask_by_hand(tokenizer, ids):
    """Independent of the offsets: walk the token strings of the ChatML layout. Trained: every
    token after '<|im_start|>assistant\\n' up to and including its '<|im_end|>'."""
    pieces = [tokenizer.decode([i]) for i in ids]
    mask, state, header = [], "outside", ""
    for piece in pieces:
        if state == "outside":
            mask.append(False)
            if piece == "<|im_start|>":
                state, header = "header", ""
        elif state == "header":
            mask.append(False)
            header += piece
            if header.endswith("\n"):
                state = "assistant" if header == "assistant\n" else "other"
        elif state == "assistant":
            mask.append(True)
            if piece == "<|im_end|>":
                state = "outside"
        else:  # system or user body
            mask.append(False)
            if piece == "<|im_end|>":
                state = "outside"
    return mask


def test_mask_token_by_token(tok):
    messages = small_messages()
    ids, mask = tokenize_with_mask(tok, messages)
    assert ids == tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert mask == expected_mask_by_hand(tok, ids)

    # the trained tokens are exactly the two assistant messages, each with its end-of-turn token
    runs, current = [], []
    for token, trained in zip(ids, mask, strict=True):
        if trained:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    assert runs == [
        "(thinking) A stranger with questions.\n(speaking) In Bonn, on the Rhine!<|im_end|>",
        "(speaking) Neefe taught me first.<|im_end|>",
    ]
    # the newline after <|im_end|> and the next header are not trained
    first_end = ids.index(tok.convert_tokens_to_ids("<|im_end|>"), mask.index(True))
    assert mask[first_end] and not mask[first_end + 1]


def test_prompt_tokens_match_what_inference_sends(tok):
    """The tokens before each assistant message are what the model sees at chat time."""
    messages = small_messages()
    ids, mask = tokenize_with_mask(tok, messages)
    starts = [i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1])]
    assistant_at = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for start, index in zip(starts, assistant_at, strict=True):
        prompt = render(tok, messages[:index], generation_prompt=True)
        assert tok(prompt, add_special_tokens=False)["input_ids"] == ids[:start]


def test_template_that_rewrites_the_prefix_falls_back_to_the_message_text(tok):
    # a system line that depends on the whole conversation: prefixes are no longer prefixes
    tok.chat_template = (
        "<|im_start|>system\n{{ messages|length }} messages. {{ messages[0]['content'] }}<|im_end|>\n"
        "{% for m in messages[1:] %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    messages = small_messages()
    ids, mask = tokenize_with_mask(tok, messages)
    assert mask == expected_mask_by_hand(tok, ids)
    assert tok.decode([t for t, m in zip(ids, mask, strict=True) if m]).count("<|im_end|>") == 2


def test_template_without_the_message_text_is_refused(tok):
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{{ messages|length }}{% endif %}"
    )
    with pytest.raises(DataError, match="chat template"):
        tokenize_with_mask(tok, small_messages())


def test_template_that_needs_a_user_turn_first_gets_one(tok):
    tok.chat_template = (
        "{% if messages|length > 1 and messages[1]['role'] != 'user' %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    messages = roleplay.to_messages(
        "Beethoven",
        "Ludwig van Beethoven",
        Scene(location="Vienna", status="Alone."),
        [roleplay.Turn("Beethoven", "Where is my pencil?", "speaking")],
    )
    [(ids, mask)] = split_conversation(tok, messages, 512)
    text = tok.decode(ids)
    assert f"<|im_start|>user\n{SCENE_START}<|im_end|>" in text
    assert tok.decode([t for t, m in zip(ids, mask, strict=True) if m]) == (
        "(speaking) Where is my pencil?<|im_end|>"
    )


def test_long_dialogue_splits_at_turn_boundaries_with_the_system_message(tok):
    profile = get_profile("beethoven")
    record = Experience.model_validate(long_record(turns=10, words=30))
    messages = roleplay.to_messages(
        profile.short_name, profile.name, record.scene(), record.turns()
    )
    whole, _ = tokenize_with_mask(tok, messages)
    stats = Counter()
    parts = split_conversation(tok, messages, 400, stats)
    assert len(whole) > 400 and len(parts) >= 3 and stats["truncated"] == 0
    system_ids = tok(render(tok, messages[:1]), add_special_tokens=False)["input_ids"]
    answers = []
    for ids, mask in parts:
        assert len(ids) <= 400
        assert ids[: len(system_ids)] == system_ids  # every part starts with the system message
        text = tok.decode(ids)
        assert text.endswith("<|im_end|>\n")  # ends after the character's turn
        assert mask[-2] and not mask[-1]  # <|im_end|> trained, the newline not
        trained = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
        answers += [line.split(":")[0] for line in trained.split("(speaking) ")[1:]]
        # a part begins with a user message (a question) right after the system message
        assert text[len(tok.decode(system_ids)) :].startswith("<|im_start|>user\nMan: Question")
    assert answers == [f"Answer {i}" for i in range(10)]  # every answer once, in order


def _exchange(question_words: int, answer_words: int) -> Experience:
    return Experience.model_validate(
        {
            "id": "one",
            "location": "Vienna",
            "status": "A long talk.",
            "dialogue": [
                {"role": "Man", "content": "Start. " + "tell me more " * question_words + "End?"},
                {
                    "role": "Beethoven",
                    "action": "speaking",
                    "content": ("Answer:" + " music" * answer_words),
                },
            ],
        }
    )


def test_long_question_loses_its_start_and_keeps_the_answer(tok):
    profile = get_profile("beethoven")
    result = build_examples(tok, profile, [_exchange(200, 5)], max_seq_len=160)
    [example] = result.examples
    assert len(example.input_ids) <= 160 and result.stats["shortened"] == 1
    assert "truncated" not in result.stats
    text = tok.decode(example.input_ids)
    assert "Man: …" in text and "End?" in text and "Start." not in text
    trained = tok.decode([t for t in example.labels if t != IGNORE])
    assert trained == "(speaking) Answer:" + " music" * 5 + "<|im_end|>"


def test_long_answer_is_cut_at_the_limit(tok):
    profile = get_profile("beethoven")
    result = build_examples(tok, profile, [_exchange(3, 300)], max_seq_len=128)
    [example] = result.examples
    assert len(example.input_ids) == 128 and result.stats["truncated"] == 1
    assert example.labels[-1] != IGNORE  # the cut falls inside the answer, which stays trained


def test_build_examples_labels_follow_the_mask(tok):
    profile = get_profile("beethoven")
    record = Experience.model_validate(
        {
            "id": "x",
            "location": "Vienna",
            "status": "A visit.",
            "dialogue": [
                {"role": "Man", "content": "Hello?"},
                {"role": "Beethoven", "action": "speaking", "content": "Speak up!"},
            ],
        }
    )
    [example] = build_examples(tok, profile, [record], 512).examples
    trained = [t for t in example.labels if t != IGNORE]
    assert tok.decode(trained) == "(speaking) Speak up!<|im_end|>"
    assert example.trained_tokens == len(trained) < len(example.input_ids)
    assert example.source == "x#0"

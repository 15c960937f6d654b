"""A chat template for base models that ship without one (google/gemma-3-270m, most ``-base``
checkpoints), chosen by the turn markers their vocabulary already has.

Training records the template in the run manifest; export writes it into the merged GGUF and
hands it to the smoke test, so the character is asked the way it was trained. llama.cpp models
whose GGUF has no template (such a base, under an adapter-only export) are asked the same way:
the choice depends only on the vocabulary, so it is the one training made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] + '\n\n' %}{% set rest = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' }}"
    "{{ (first if loop.first else '') + message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def fallback_for_vocab(has_token: Callable[[str], bool]) -> str:
    """Gemma's turns when the vocabulary has ``<start_of_turn>`` and ``<end_of_turn>``, else
    ChatML; ``has_token`` says whether a text is one token of the vocabulary."""
    if has_token("<start_of_turn>") and has_token("<end_of_turn>"):
        return GEMMA
    return CHATML


def fallback_chat_template(tokenizer: Any) -> str:
    """The template for a (transformers) tokenizer without one."""
    vocab = tokenizer.get_vocab()
    return fallback_for_vocab(vocab.__contains__)

"""Tokens evaluated per turn over a 30-turn scripted chat: charlite's KV reuse vs re-sending.

charlite keeps the rendered history byte-stable, so each turn evaluates only its new tokens.
The naive approach re-sends the whole history to a fresh context every turn.
Goal: charlite evaluates at most the new tokens + 10 %. Prints `kv_reuse: RATIO` last, where
RATIO = tokens charlite evaluated / new tokens (1.0 is perfect; the naive figure is printed too).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import private_home, report  # noqa: E402

QUESTIONS = [
    "Good afternoon, maestro.",
    "Where were you born?",
    "Who taught you music?",
    "What was your father like?",
    "When did you come to Vienna?",
    "Did you meet Mozart?",
    "Tell me about Haydn.",
    "How is your hearing?",
    "What are you composing now?",
    "Which symphony do you love most?",
    "What do you think of Napoleon?",
    "Do you have friends?",
    "Tell me about your nephew.",
    "What do you eat?",
    "Do you walk in the countryside?",
    "What is music for?",
    "Who are your patrons?",
    "Do you love anyone?",
    "Are you proud?",
    "What angers you?",
    "How do you work?",
    "Do you play the piano still?",
    "What of the opera Fidelio?",
    "What of your Ninth?",
    "Do you fear death?",
    "What is freedom?",
    "What do you read?",
    "How do you spend your evenings?",
    "What advice would you give a young composer?",
    "Goodbye, and thank you.",
]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    private_home()
    from charlite.backends import GenParams, get_backend
    from charlite.characters import get_profile
    from charlite.chat import ChatSession

    profile = get_profile("beethoven")
    backend = get_backend("embedded", n_ctx=4096)
    llm = backend.llm
    session = ChatSession(
        profile,
        backend,
        params=GenParams(temperature=0.0, max_tokens=24, seed=1),
        use_persona_cache=False,
    )
    evaluated = new = naive = 0
    previous: list[int] = []
    for question in QUESTIONS:
        before = llm.evaluated
        reply = session.reply(question)
        turn_eval = llm.evaluated - before
        prompt = backend.prompt_tokens(session.messages()[:-1])  # what this turn was asked with
        # new = everything in this prompt that the last prompt + its reply did not already hold
        new += len(prompt) - common_prefix(prompt, previous)
        naive += len(prompt)
        # sampled tokens are fed back and evaluated too, in both approaches: count prompt work only
        fed_back = llm.n_tokens - len(prompt)
        evaluated += turn_eval - fed_back
        del reply
        previous = prompt + llm.input_ids[len(prompt) : llm.n_tokens].tolist()
    report(
        "kv_reuse",
        evaluated / new,
        turns=len(QUESTIONS),
        prompt_tokens_evaluated=evaluated,
        new_prompt_tokens=new,
        naive_tokens_evaluated=naive,
        naive_over_charlite=naive / evaluated,
    )


if __name__ == "__main__":
    main()

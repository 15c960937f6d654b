"""A judge request that fails alone is one unscored judgement, whatever the transport.

A local (llama.cpp) judge whose context cannot hold the judge's prompt reports a
PromptTooLongError, a RequestError like the HTTP backends' errors: the judgement is recorded
unscored after one attempt (another seed cannot shorten the prompt) and the evaluation goes on.
"""

from __future__ import annotations

from pathlib import Path

from charlite.backends.llamacpp import LlamaCppBackend
from charlite.eval.evaluate import judge_all, prepare
from charlite.eval.judge import Judge
from charlite.files import read_jsonl
from charlite.spec import parse_spec

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_a_local_judge_too_small_for_the_prompt_leaves_judgements_unscored(tmp_path):
    inp = prepare([FIXTURES / "beethoven_examples.json"])[0]
    judge = Judge(LlamaCppBackend(parse_spec("embedded"), n_ctx=256), attempts=3)
    scores = tmp_path / "scores.jsonl"
    run = judge_all([inp], judge, scores, limit=2)
    assert run.new == len(run.records) == 2 * len(inp.dimensions)
    assert len(read_jsonl(scores)) == run.new
    for rec in run.records:
        assert (rec["status"], rec["score"], rec["attempts"]) == ("unscored", None, 1)
        assert len(rec["errors"]) == 1
        assert "longer than the model's context" in rec["errors"][0]

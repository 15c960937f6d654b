"""A request that fails at the teacher is one failed attempt, whatever the transport.

llama.cpp reports a prompt longer than its context before generating; the HTTP backends report
a failed request as a BackendError. Both are :class:`~charlite.errors.RequestError`, which the
generator counts per attempt instead of ending the run.
"""

from __future__ import annotations

import pytest

from charlite.backends.llamacpp import LlamaCppBackend
from charlite.characters import get_profile
from charlite.errors import BackendError, ModelError, PromptTooLongError, RequestError
from charlite.experience.dataset import Dataset
from charlite.experience.pipeline import GenerateOptions, Generator
from charlite.spec import parse_spec

SMALL_CTX = 256  # shorter than every teacher prompt (each carries the teacher's instructions)


def small_teacher() -> LlamaCppBackend:
    return LlamaCppBackend(parse_spec("embedded"), n_ctx=SMALL_CTX)


@pytest.mark.slow
def test_an_over_long_prompt_is_a_request_error_of_the_llama_cpp_backend():
    backend = small_teacher()
    with pytest.raises(PromptTooLongError, match="longer than the model's context") as info:
        backend.complete([{"role": "user", "content": "word " * (2 * SMALL_CTX)}])
    assert isinstance(info.value, ModelError) and isinstance(info.value, RequestError)
    assert issubclass(BackendError, RequestError)
    assert not issubclass(ModelError, RequestError)  # a model that cannot load still ends a run


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["one call at a time", "batched"])
def test_generate_goes_on_when_the_llama_cpp_teacher_reports_an_over_long_prompt(workers):
    options = GenerateOptions(paragraphs=2, scenes=1, protective=1, max_attempts=3, workers=workers)
    generator = Generator(get_profile("beethoven"), options, backend_factory=small_teacher)
    result = generator.run()  # the first over-long prompt used to end the run with an error
    failures = Dataset("beethoven").failures()
    # every task was tried once (another seed cannot shorten the prompt) and failed alone
    assert sorted(f["task"] for f in failures) == sorted({f["task"] for f in failures})
    assert [f["stage"] for f in failures].count("scenes") == 2
    assert [f["stage"] for f in failures].count("protective") == 1
    assert {f["reason"] for f in failures} == {"prompt_too_long"}
    assert all("longer than the model's context" in f["detail"] for f in failures)
    assert result.failures == {"prompt_too_long": 3}
    assert result.failed_tasks == {"scenes": 2, "experiences": 0, "protective": 1}
    assert not result.complete
    assert result.workers == workers  # two workers: both decode on the shared batch

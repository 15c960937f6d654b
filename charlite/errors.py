"""Typed errors. Each becomes one clear line and a non-zero exit at the CLI edge.

A message says what is wrong and, where it can, what to do next:

>>> str(NotFoundError("no character 'beethovn'", hint="did you mean 'beethoven'?"))
"no character 'beethovn'; did you mean 'beethoven'?"
"""

from __future__ import annotations


class CharliteError(Exception):
    """Base class of every error charlite reports to the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class NotFoundError(CharliteError):
    """A character, dataset, run, export or file that does not exist."""


class ProfileError(CharliteError):
    """A profile that cannot be read or does not validate."""


class RequestError(CharliteError):
    """One request to a model failed, whatever the transport: the caller may count it as one
    failed attempt and go on (the data generator does)."""


class ModelError(CharliteError):
    """A model that is missing, corrupt or cannot be loaded."""


class BackendError(RequestError):
    """A model server that cannot be reached or answered badly."""


class PromptTooLongError(ModelError, RequestError):
    """A prompt longer than the model's context, whichever backend says so (llama.cpp before
    generating, a server in its error answer): the same prompt cannot fit on a retry."""


class ContextFullError(ModelError, RequestError):
    """A context shared by several requests (llama.cpp batching) had no room left for this
    one: a retry may fit."""


class SpecError(CharliteError):
    """A model spec string that cannot be parsed."""


class DataError(CharliteError):
    """Bad dataset, import file or record."""


class StorageError(CharliteError):
    """CHARLITE_HOME or another folder that cannot be written."""


class TrainingError(CharliteError):
    """A training run that cannot start or continue."""


class ExportError(CharliteError):
    """An export that cannot be produced or failed its smoke test."""


class InterruptedByUser(CharliteError):
    """Ctrl-C: work so far is kept."""

    exit_code = 130

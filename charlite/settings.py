"""User defaults: every key ``charlite config`` knows, declared once, and where a value comes from.

Precedence, highest first: a command-line flag, the environment (``CHARLITE_MODEL``...), the
config file (``CHARLITE_HOME/config.json``, written by ``charlite config set``), the built-in
default. :func:`resolve` is the one function that applies it:

>>> resolve("temperature", 0.2)
Resolved(value=0.2, source='flag')

A trained character's newest export is not a setting: it wins over ``model`` (the default chat
model) unless ``--prompted`` is given; see :func:`charlite.voices.resolve_model`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from charlite.errors import CharliteError
from charlite.files import write_json_atomic
from charlite.home import charlite_home
from charlite.spec import parse_spec

CONFIG_FILE = "config.json"
KNOWLEDGE_MODES = ("auto", "always", "off")


class SettingError(CharliteError):
    """An unknown key or a value a key does not accept."""


def _spec(text: str) -> str:
    parse_spec(text)  # raises SpecError with the forms it accepts
    return text.strip()


def _number(kind: type, low: float | None, high: float | None) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = kind(value)
            if kind is int and isinstance(value, float) and value != number:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"must be {'a whole number' if kind is int else 'a number'}") from None
        if low is not None and number < low:
            raise ValueError(f"must be at least {low}")
        if high is not None and number > high:
            raise ValueError(f"must be at most {high}")
        return number

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


@dataclass(frozen=True)
class Setting:
    key: str
    help: str
    parse: Callable[[Any], Any]
    default: Any = None
    default_note: str | None = None
    """How to describe a ``None`` default ("all cores", "the interviewee's model")."""

    @property
    def env(self) -> str:
        return "CHARLITE_" + self.key.upper().replace("-", "_")

    def check(self, value: Any, where: str) -> Any:
        """``value`` parsed, or a SettingError naming ``where`` it came from (``--max-tokens``)."""
        try:
            return self.parse(value)
        except ValueError as exc:
            raise SettingError(f"{where} {exc}") from None
        except CharliteError as exc:
            raise SettingError(f"{where}: {exc}") from None


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("model", "default chat and interview model", _spec, "embedded"),
        Setting("teacher", "teacher of 'charlite generate'", _spec, "embedded"),
        Setting("judge", "judge of 'charlite eval'", _spec, "embedded"),
        Setting(
            "interviewer",
            "model asking the follow-ups of 'charlite interview'",
            _spec,
            None,
            "the interviewee's model",
        ),
        Setting("temperature", "chat sampling temperature", _number(float, 0.0, 5.0), 0.7),
        Setting("max-tokens", "longest chat reply in tokens", _number(int, 1, 32768), 200),
        Setting("context", "chat context size in tokens", _number(int, 256, 1048576), 2048),
        Setting("threads", "CPU threads of llama.cpp", _number(int, 1, 1024), None, "every core"),
        Setting(
            "knowledge",
            "when chat retrieves profile facts (auto, always, off)",
            _choice(KNOWLEDGE_MODES),
            "auto",
        ),
    )
}


class Resolved(NamedTuple):
    value: Any
    source: str
    """``flag``, ``env CHARLITE_...``, ``config file`` or ``default``."""


def setting(key: str) -> Setting:
    try:
        return SETTINGS[key]
    except KeyError:
        raise SettingError(
            f"unknown setting '{key}'", hint=f"the keys are: {', '.join(SETTINGS)}"
        ) from None


def config_path() -> Path:
    return charlite_home() / CONFIG_FILE


def read_config() -> dict[str, Any]:
    """The config file's values (an absent file is empty)."""
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}  # no file yet (or no home yet: the command that writes says so)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingError(
            f"cannot read {path}: {exc}", hint="fix it or delete it to start again"
        ) from None
    if not isinstance(data, dict):
        raise SettingError(f"{path} is not a JSON object", hint="delete it to start again")
    return data


def _write_config(data: dict[str, Any]) -> None:
    write_json_atomic(config_path(), data)


def resolve(key: str, flag_value: Any = None) -> Resolved:
    """The effective value of ``key`` and where it came from: flag > env > config > default."""
    s = setting(key)
    if flag_value is not None:
        return Resolved(s.check(flag_value, f"--{key}"), "flag")
    env = os.environ.get(s.env)
    if env is not None and env.strip():
        return Resolved(s.check(env, s.env), f"env {s.env}")
    stored = read_config().get(key)
    if stored is not None:
        return Resolved(s.check(stored, f"{key} in {config_path()}"), "config file")
    return Resolved(s.default, "default")


def value(key: str, flag_value: Any = None) -> Any:
    return resolve(key, flag_value).value


def knowledge_mode(flag_value: str | None = None) -> str:
    """The effective ``knowledge`` mode of chat: auto, always or off."""
    return resolve("knowledge", flag_value).value


def set_value(key: str, text: str) -> Any:
    """Store ``key`` in the config file after checking it; returns the stored value."""
    s = setting(key)
    stored = s.check(text, key)
    data = read_config()
    data[key] = stored
    _write_config(data)
    return stored


def unset(key: str) -> bool:
    """Remove ``key`` from the config file; False if it was not there."""
    setting(key)
    data = read_config()
    if key not in data:
        return False
    del data[key]
    _write_config(data)
    return True


def describe(resolved: Resolved, key: str) -> str:
    """``0.7 (default)``: a value and its source, for help texts and ``doctor``."""
    s = setting(key)
    shown = s.default_note if resolved.value is None and s.default_note else resolved.value
    return f"{shown} ({resolved.source})"


def effective() -> list[tuple[str, Any, str, str]]:
    """(key, value, source, help) of every setting; a broken value shows as its error."""
    rows = []
    for key, s in SETTINGS.items():
        try:
            r = resolve(key)
            shown = s.default_note if r.value is None and s.default_note else r.value
            rows.append((key, shown, r.source, s.help))
        except CharliteError as exc:
            rows.append((key, f"invalid: {exc}", "error", s.help))
    return rows

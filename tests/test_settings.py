"""`charlite config` and the one settings registry: flag > env > config file > default."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from charlite import settings
from charlite.cli import cli
from charlite.errors import CharliteError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for s in settings.SETTINGS.values():
        monkeypatch.delenv(s.env, raising=False)


def test_precedence_flag_env_config_default(monkeypatch):
    assert settings.resolve("temperature") == (0.7, "default")
    settings.set_value("temperature", "0.3")
    assert settings.resolve("temperature") == (0.3, "config file")
    monkeypatch.setenv("CHARLITE_TEMPERATURE", "0.5")
    assert settings.resolve("temperature") == (0.5, "env CHARLITE_TEMPERATURE")
    assert settings.resolve("temperature", 0.9) == (0.9, "flag")
    monkeypatch.delenv("CHARLITE_TEMPERATURE")
    assert settings.unset("temperature") is True
    assert settings.unset("temperature") is False
    assert settings.resolve("temperature") == (0.7, "default")


def test_every_key_has_an_env_name_and_a_valid_default():
    assert set(settings.SETTINGS) >= {
        "model",
        "teacher",
        "judge",
        "interviewer",
        "temperature",
        "max-tokens",
        "context",
        "threads",
        "knowledge",
    }
    assert settings.setting("max-tokens").env == "CHARLITE_MAX_TOKENS"
    assert settings.setting("model").env == "CHARLITE_MODEL"
    for key, s in settings.SETTINGS.items():
        if s.default is not None:
            assert s.check(s.default, key) == s.default


@pytest.mark.parametrize(
    "key, bad, message",
    [
        ("max-tokens", "0", "must be at least 1"),
        ("max-tokens", "1.5", "whole number"),
        ("temperature", "hot", "must be a number"),
        ("knowledge", "sometimes", "auto, always, off"),
        ("model", "nonsense-model", "unknown model spec"),
        ("model", "qwen2.5-3b", "not pulled yet; run: charlite pull qwen2.5-3b"),
        ("threads", "0", "must be at least 1"),
    ],
)
def test_values_are_checked(key, bad, message):
    with pytest.raises(CharliteError, match=message):
        settings.set_value(key, bad)
    assert not settings.config_path().exists()


def test_a_bad_env_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("CHARLITE_MAX_TOKENS", "-3")
    with pytest.raises(CharliteError, match="CHARLITE_MAX_TOKENS must be at least 1"):
        settings.resolve("max-tokens")


def test_knowledge_mode_for_chat(monkeypatch):
    assert settings.knowledge_mode() == "auto"
    settings.set_value("knowledge", "off")
    assert settings.knowledge_mode() == "off"
    assert settings.knowledge_mode("always") == "always"
    with pytest.raises(CharliteError):
        settings.knowledge_mode("never")


def test_unknown_key():
    with pytest.raises(CharliteError, match="unknown setting 'colour'"):
        settings.resolve("colour")


def test_config_cli_round_trip(charlite_home):
    runner = CliRunner()
    r = runner.invoke(cli, ["config", "set", "max-tokens", "64"])
    assert r.exit_code == 0, r.output
    assert json.loads((charlite_home / "config.json").read_text()) == {"max-tokens": 64}
    r = runner.invoke(cli, ["config", "get", "max-tokens"])
    assert r.stdout.strip() == "64" and "config file" in r.stderr
    r = runner.invoke(cli, ["config", "list", "--json"])
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["max-tokens"]["source"] == "config file"
    assert rows["threads"]["value"] == "every core"
    r = runner.invoke(cli, ["config", "set", "colour", "red"])
    assert r.exit_code == 1 and r.stderr.startswith("error: unknown setting 'colour'")
    r = runner.invoke(cli, ["config", "unset", "max-tokens"])
    assert r.exit_code == 0
    assert runner.invoke(cli, ["config", "get", "max-tokens"]).stdout.strip() == "200"


def test_help_and_doctor_show_where_values_come_from(monkeypatch):
    settings.set_value("temperature", "0.2")
    monkeypatch.setenv("CHARLITE_MAX_TOKENS", "77")
    runner = CliRunner()
    help_text = " ".join(runner.invoke(cli, ["chat", "--help"]).stdout.split())
    assert "[now: 0.2 (config file)]" in help_text
    assert "[now: 77 (env CHARLITE_MAX_TOKENS)]" in help_text
    assert "[now: embedded (default)]" in help_text
    judge_help = " ".join(runner.invoke(cli, ["eval", "--help"]).stdout.split())
    assert "[now: embedded (default)]" in judge_help
    r = runner.invoke(cli, ["doctor", "--quick", "--json"])
    rows = {row["key"]: row for row in json.loads(r.stdout)["settings"]}
    assert rows["temperature"] == {"key": "temperature", "value": 0.2, "source": "config file"}
    assert rows["max-tokens"]["source"] == "env CHARLITE_MAX_TOKENS"


def test_a_broken_config_file_is_one_line(charlite_home):
    charlite_home.mkdir(parents=True, exist_ok=True)
    (charlite_home / "config.json").write_text("{not json")
    r = CliRunner().invoke(cli, ["config", "get", "model"])
    assert r.exit_code == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "config.json" in r.stderr

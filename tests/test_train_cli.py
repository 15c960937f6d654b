"""``charlite train``: settings precedence and bad input (one clear line, non-zero exit, nothing
overwritten). None of these load a model."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from test_train_support import fact_records, write_dataset

from charlite.cli import cli
from charlite.home import CharacterPaths
from charlite.train import TrainConfig, latest_run, list_runs, load_run
from charlite.train.config import read_config_file


def invoke(*args: str):
    return CliRunner().invoke(cli, ["train", *args])


def one_error_line(result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Settings: defaults < --config FILE < flags


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text("rank: 8\nlr: 0.002\nmax-seq-len: 512\nalpha: 16\npacking: false\n")
    result = invoke(
        "beethoven", "--config", str(cfg_file), "--lr", "5e-4", "--packing", "--print-config"
    )
    assert result.exit_code == 0, result.output
    settings = yaml.safe_load(result.stdout)
    assert settings["rank"] == 8 and settings["alpha"] == 16  # from the file
    assert settings["max_seq_len"] == 512  # file, dashes accepted
    assert settings["lr"] == 5e-4  # the flag beats the file
    assert settings["packing"] is True  # --packing beats 'packing: false'
    assert settings["epochs"] == 3.0 and settings["base"] == "embedded"  # defaults
    assert settings["batch_size"] >= 1 and settings["grad_accum"] >= 1  # machine defaults filled
    assert set(settings) == set(TrainConfig.model_fields)

    # the printed settings are themselves a valid --config file giving the same result
    again = tmp_path / "again.yaml"
    again.write_text(result.stdout)
    assert (
        yaml.safe_load(invoke("beethoven", "--config", str(again), "--print-config").stdout)
        == settings
    )


def test_every_flag_is_a_config_field_with_help():
    from charlite.cli.train import train

    options = {o.name: o for o in train.params}
    for name in TrainConfig.model_fields:
        assert name in options, name
        assert options[name].help, name
    for flag in ["--base", "--engine", "--dataset", "--epochs", "--max-steps", "--lr", "--rank",
                 "--alpha", "--max-seq-len", "--batch-size", "--grad-accum", "--config", "--resume"]:  # fmt: skip
        assert any(flag in o.opts for o in train.params), flag


def test_machine_defaults_differ_between_cpu_and_gpu():
    cfg = TrainConfig(lr=3e-4)
    cpu, gpu = cfg.resolved("cpu"), cfg.resolved("cuda")
    assert cpu.lr == gpu.lr == 3e-4  # given values stay
    assert cpu.max_seq_len < gpu.max_seq_len and cpu.gradient_checkpointing is False
    assert gpu.gradient_checkpointing is True
    assert TrainConfig().resolved("cpu").lr > TrainConfig().resolved("cuda").lr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rank: 8\nfavourite: blue\n", "unknown setting 'favourite'"),
        ("rank: -3\n", "rank"),
        ("engine: turbo\n", "engine"),
        ("rank: [8\n", "not valid YAML"),
        ("- 1\n- 2\n", "mapping"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    one_error_line(invoke("beethoven", "--config", str(path)), needle, str(path))


def test_missing_config_file():
    one_error_line(invoke("beethoven", "--config", "/nonexistent/x.yaml"), "does not exist")


def test_read_config_file_accepts_an_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert read_config_file(path) == {}


def test_resume_refuses_new_settings():
    one_error_line(invoke("beethoven", "--resume", "r1", "--lr", "1e-3"), "--lr", "own settings")


# ---------------------------------------------------------------------------------------------
# Bad input


def test_no_dataset():
    one_error_line(invoke("beethoven"), "no dataset 'default'", "charlite generate beethoven")
    assert not CharacterPaths.of("beethoven").runs()


def test_empty_dataset():
    write_dataset("beethoven", [])
    one_error_line(invoke("beethoven"), "empty")
    assert not CharacterPaths.of("beethoven").runs()


def test_dataset_made_for_another_character_by_its_manifest():
    write_dataset("beethoven", fact_records(3), manifest={"format": 1, "character": "caesar"})
    one_error_line(invoke("beethoven"), "made for 'caesar'")


def test_dataset_of_another_character_by_its_speakers():
    records = [
        {
            "id": f"c{i}",
            "location": "Rome",
            "status": "The Senate.",
            "dialogue": [
                {"role": "Brutus", "content": "Hail."},
                {"role": "Caesar", "action": "speaking", "content": "Et tu?"},
            ],
        }
        for i in range(3)
    ]
    write_dataset("beethoven", records, name="rome")
    one_error_line(invoke("beethoven", "--dataset", "rome"), "no lines spoken by Beethoven")
    assert not CharacterPaths.of("beethoven").runs()


@pytest.mark.parametrize(
    ("base", "needle"),
    [
        ("nonsense", "unknown model spec"),
        ("ollama:llama3", "cannot train on"),
        ("openai:m@http://127.0.0.1:1/v1", "cannot train on"),
        ("gguf:/nonexistent/model.gguf", "does not exist"),
        ("hf:/nonexistent/folder", "no such model folder"),
        ("hf:nobody/not-a-model-xyz", "not in the local Hugging Face cache"),
    ],
)
def test_unknown_base(base, needle):
    write_dataset("beethoven", fact_records(3))
    one_error_line(invoke("beethoven", "--base", base, "--engine", "peft"), needle)
    assert not CharacterPaths.of("beethoven").runs()


def test_existing_run_folder_is_not_touched():
    write_dataset("beethoven", fact_records(3))
    folder = CharacterPaths.of("beethoven").run("first")
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    one_error_line(invoke("beethoven", "--run", "first"), "already exists", "nothing was changed")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"


def test_bad_run_name_and_unknown_character():
    one_error_line(invoke("beethoven", "--run", "../escape"), "invalid run id")
    one_error_line(invoke("beethovn"), "no character 'beethovn'", "did you mean 'beethoven'")


def test_unsloth_without_cuda_is_one_line():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    write_dataset("beethoven", fact_records(3))
    one_error_line(
        invoke("beethoven", "--engine", "unsloth"), "needs an NVIDIA GPU", "--engine peft"
    )
    assert not CharacterPaths.of("beethoven").runs()


def test_auto_engine_says_which_it_picked():
    pytest.importorskip("torch")
    from charlite.train.engines import choose_engine, cuda_available, unsloth_installed

    choice = choose_engine("auto")
    expected = "unsloth" if cuda_available() and unsloth_installed() else "peft"
    assert choice.engine == expected
    assert choice.line().startswith(f"engine: {expected} on {choice.device} (")
    assert choose_engine("peft").engine == "peft"


def test_resume_of_unknown_or_completed_runs():
    one_error_line(invoke("beethoven", "--resume", "nope"), "no run 'nope'")
    folder = CharacterPaths.of("beethoven").run("done")
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "manifest.json").write_text(
        json.dumps({"format": 1, "status": "completed", "config": {}, "created": "2025"})
    )
    one_error_line(invoke("beethoven", "--resume", "done"), "already completed")
    assert latest_run("beethoven").run_id == "done"
    assert [r.run_id for r in list_runs("beethoven")] == ["done"]
    assert load_run("beethoven", "done").adapter_dir == folder / "adapter"


def test_run_with_unknown_manifest_format():
    folder = CharacterPaths.of("beethoven").run("future")
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": 99}))
    one_error_line(invoke("beethoven", "--resume", "future"), "unknown format")
    assert latest_run("beethoven") is None

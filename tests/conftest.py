"""Every test gets its own CHARLITE_HOME; nothing touches the real user folder."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def charlite_home(tmp_path, monkeypatch):
    home = tmp_path / "charlite-home"
    monkeypatch.setenv("CHARLITE_HOME", str(home))
    from charlite import characters

    characters._load_cached.cache_clear()
    return home


@pytest.fixture(scope="session")
def embedded_path():
    from charlite.spec import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def random_adapters(tmp_path_factory, embedded_path):
    from helpers_models import write_random_adapter

    folder = tmp_path_factory.mktemp("adapters")
    return [
        write_random_adapter(embedded_path, folder / f"random-{i}.gguf", seed=i) for i in (1, 2)
    ]


# ---------------------------------------------------------------------------------------------
# Offline guarantee (issue 9): every test runs with outbound sockets blocked except to this
# machine (127.0.0.0/8, ::1, localhost, AF_UNIX). connect, connect_ex and create_connection
# raise before any system call. The guard lives in tests/robustness/helpers.py, which also
# installs it in the CLI processes of tests/robustness/test_robust_offline.py.


def pytest_configure(config):
    import importlib.util
    import sys
    from pathlib import Path

    os.environ["HF_HUB_OFFLINE"] = "1"
    path = Path(__file__).parent / "robustness" / "helpers.py"
    spec = importlib.util.spec_from_file_location("charlite_test_network_guard", path)
    guard = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = guard
    spec.loader.exec_module(guard)
    guard.install_network_guard()

"""Fixtures shared by every tier: settings isolated from the developer's environment."""

from __future__ import annotations

import os

import pytest

from pudato.settings import reset_settings


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # A developer's .env or PUDATO_* variables must not leak into a test.
    for name in list(os.environ):
        if name.startswith("PUDATO_") and not os.environ.get("PUDATO_KEEP_ENV_IN_TESTS"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    reset_settings()
    yield
    reset_settings()

"""Fixtures shared by every tier: settings isolated from the developer's environment."""

from __future__ import annotations

import os

import pytest

from pudato.settings import reset_settings


@pytest.fixture(autouse=True)
def _isolated_settings(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A developer's .env or PUDATO_* variables, or the integration stack's, must not leak
    # into a unit test; integration tests run on the stack's.
    if request.node.get_closest_marker("integration") is None:
        for name in list(os.environ):
            if name.startswith("PUDATO_"):
                monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    reset_settings()
    yield
    reset_settings()

"""Settings: .env.example documents every setting, and bad values name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pudato.errors import ConfigurationError
from pudato.settings import Settings, get_settings, reset_settings

REPO = Path(__file__).resolve().parents[2]


def _leaf_names(model: type, prefix: str = "PUDATO_") -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            names |= _leaf_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def test_env_example_documents_every_setting_and_loads(tmp_path, monkeypatch):
    text = (REPO / ".env.example").read_text()
    documented = {line.lstrip("# ").split("=")[0] for line in text.splitlines() if "=" in line}
    missing = {name for name in _leaf_names(Settings) if not any(d.startswith(name) for d in documented)}
    assert not missing, f".env.example does not document: {sorted(missing)}"
    (tmp_path / ".env").write_text(text.replace("SECRET_ACCESS_KEY=testing", "SECRET_ACCESS_KEY=s3cr3t-value"))
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.aws.endpoint_url == "http://127.0.0.1:5000"
    assert settings.aws.secret_access_key is not None
    assert settings.aws.secret_access_key.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) + str(settings.model_dump())  # secrets never print


def test_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("PUDATO_WAREHOUSE__MAX_ROWS", "many")
    reset_settings()
    with pytest.raises(ConfigurationError, match="PUDATO_WAREHOUSE__MAX_ROWS"):
        get_settings()


def test_unknown_pudato_variable_is_refused(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("PUDATO_STORAGE__BUKET=typo\n")
    monkeypatch.chdir(tmp_path)
    reset_settings()
    with pytest.raises(ConfigurationError, match="STORAGE"):
        get_settings()

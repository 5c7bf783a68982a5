"""Backends: one folder per handler kind, one module per backend, chosen by name."""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from typing import Any

from pudato.errors import ConfigurationError


def load_backend(kind: str, aliases: dict[str, str], name: str) -> Any:
    """Import the class registered under ``name``; unknown names list the known ones."""
    try:
        path = aliases[name]
    except KeyError:
        hint = get_close_matches(name, aliases, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigurationError(
            f"unknown {kind} backend {name!r}; known: {', '.join(sorted(aliases))}.{did_you_mean}",
            backend=name,
        ) from None
    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)

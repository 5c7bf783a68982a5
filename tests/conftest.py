"""Fixtures shared by every tier: settings isolated from the developer's environment.

Plain helpers (waiting on a condition, running git) are in tests/helpers.py: `from helpers import ...`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


OPENLINEAGE_SPEC = Path(__file__).resolve().parent / "data" / "openlineage"


@pytest.fixture(scope="session")
def openlineage_validate() -> Callable[[dict[str, Any]], None]:
    """Validate one OpenLineage event, and each of its facets against the facet's own schema."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = [json.loads(p.read_text()) for p in sorted(OPENLINEAGE_SPEC.rglob("*.json"))]
    registry: Registry[Any] = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    core = next(s for s in schemas if s["$id"].endswith("/OpenLineage.json"))

    def validate(event: dict[str, Any]) -> None:
        Draft202012Validator({"$ref": event["schemaURL"]}, registry=registry).validate(event)
        assert event["schemaURL"].startswith(core["$id"]), event["schemaURL"]
        for facet in _facets(event):
            Draft202012Validator({"$ref": facet["_schemaURL"]}, registry=registry).validate(facet)

    return validate


def _facets(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from (event.get("run", {}).get("facets") or {}).values()
    yield from (event.get("job", {}).get("facets") or {}).values()
    for dataset in [*(event.get("inputs") or []), *(event.get("outputs") or [])]:
        for key in ("facets", "inputFacets", "outputFacets"):
            yield from (dataset.get(key) or {}).values()

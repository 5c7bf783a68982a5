"""The catalog handler: register, get, search and list datasets, through a catalog backend.

Steps register their outputs automatically (the registry does it when it records
a step); this handler is for people and apps that describe, tag and find data.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pudato.backends.catalog import CatalogBackend, catalog_backend
from pudato.handlers.base import Handler, Payload, action
from pudato.protocol import DataReference, Outcome
from pudato.settings import Settings, get_settings


class RegisterPayload(Payload):
    namespace: str = Field(min_length=1, max_length=255)
    name: str = Field(min_length=1, max_length=1024)
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] = Field(default_factory=list, max_length=50)
    facets: dict[str, Any] = Field(default_factory=dict)


class GetPayload(Payload):
    namespace: str
    name: str


class SearchPayload(Payload):
    text: str | None = Field(default=None, max_length=200)
    namespace: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ListPayload(Payload):
    namespace: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class CatalogHandler(Handler):
    name = "catalog"

    def __init__(self, settings: Settings | None = None, catalog: CatalogBackend | None = None) -> None:
        self.settings = settings or get_settings()
        self.catalog = catalog or catalog_backend(self.settings)

    @action("register", RegisterPayload)
    def register(self, payload: RegisterPayload) -> Outcome:
        dataset = self.catalog.register(payload.namespace, payload.name, payload.description, payload.tags,
                                        payload.facets)
        return Outcome(data={"dataset": _public(dataset)})

    @action("get", GetPayload)
    def get(self, payload: GetPayload) -> Outcome:
        dataset = self.catalog.get(payload.namespace, payload.name)
        return Outcome(
            inputs=[DataReference(namespace=payload.namespace, name=payload.name)],
            data={"dataset": _public(dataset)},
        )

    @action("search", SearchPayload)
    def search(self, payload: SearchPayload) -> Outcome:
        found = self.catalog.search(payload.text, payload.namespace, payload.limit)
        return Outcome(data={"datasets": [_public(d) for d in found]})

    @action("list", ListPayload)
    def list(self, payload: ListPayload) -> Outcome:
        found = self.catalog.search(None, payload.namespace, payload.limit)
        return Outcome(data={"datasets": [_public(d) for d in found]})


def _public(dataset: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dataset.items() if k != "id"}

"""The catalog in Pudato's registry database: the datasets that step records register."""

from __future__ import annotations

from typing import Any

from pudato.backends.catalog import CatalogBackend, Dataset
from pudato.registry.repository import Registry
from pudato.settings import Settings


class RegistryCatalog(CatalogBackend):
    kind = "registry"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryCatalog:
        return cls(Registry(settings.registry.url))

    def register(self, namespace: str, name: str, description: str | None, tags: list[str],
                 facets: dict[str, Any]) -> Dataset:
        return self.registry.register_dataset(namespace, name, description, tags, facets)

    def get(self, namespace: str, name: str) -> Dataset:
        return self.registry.get_dataset(namespace, name)

    def search(self, text: str | None, namespace: str | None, limit: int) -> list[Dataset]:
        return self.registry.search_datasets(text, namespace, limit)

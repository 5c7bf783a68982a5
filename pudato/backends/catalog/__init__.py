"""Catalog backends: where dataset descriptions, tags and facets are kept and found.

Every backend implements :class:`CatalogBackend`. Today there is one, ``registry``: the
datasets table of Pudato's own registry database, which step records fill as they land.
To add one (an external catalog such as DataHub or Glue), write a module here with a
subclass and add it to ``BACKENDS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pudato.backends import load_backend

if TYPE_CHECKING:
    from pudato.settings import Settings

BACKENDS = {
    "registry": "pudato.backends.catalog.registry:RegistryCatalog",
}

Dataset = dict[str, Any]


class CatalogBackend:
    """The interface every catalog backend implements. Datasets are named by namespace and name."""

    kind: ClassVar[str]

    def register(self, namespace: str, name: str, description: str | None, tags: list[str],
                 facets: dict[str, Any]) -> Dataset:
        """Create or update a dataset's description, tags and facets; returns it."""
        raise NotImplementedError

    def get(self, namespace: str, name: str) -> Dataset:
        """One dataset, or :class:`~pudato.errors.NotFound`."""
        raise NotImplementedError

    def search(self, text: str | None, namespace: str | None, limit: int) -> list[Dataset]:
        """Datasets whose name or description contains ``text`` (all when None)."""
        raise NotImplementedError


def catalog_backend(settings: Settings) -> CatalogBackend:
    cls = load_backend("catalog", BACKENDS, settings.catalog.backend)
    backend: CatalogBackend = cls.from_settings(settings)
    return backend

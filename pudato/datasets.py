"""Dataset names: one rule for every handler, after OpenLineage's naming spec.

A dataset is a namespace plus a name. Two handlers that touch the same data
must produce the same pair, or lineage cannot join across them:

=============  ==========================  ==================
what           namespace                   name
=============  ==========================  ==================
S3 object      ``s3://{bucket}``           ``{key}``
local file     ``file``                    ``{absolute path}``
logic file     ``{repository URL}``        ``{path in the repository}``
lake table     ``ducklake://{lake}``       ``{schema}.{table}``
DuckDB table   ``duckdb://{database}``     ``{schema}.{table}``
=============  ==========================  ==================

``{lake}`` is the DuckLake catalog's name: its PostgreSQL database
(``pudato_lake`` by default), or the SQLite catalog file's stem. ``{database}``
is the DuckDB file's stem. The schema is always spelled out (``main.t``, not ``t``).

Which version of a dataset a step read or wrote travels in the reference's facets:

* logic files (a dbt seed): ``version`` (the commit SHA), ``sha256``;
* S3 objects: ``version`` (the S3 version id), ``sha256``, ``etag``, ``size``;
* warehouse tables: ``snapshot_id`` (the lake snapshot, lake only), ``rows``,
  ``schema_fingerprint`` (sha256 of the ordered column names and types) and ``columns``.
"""

from __future__ import annotations

from pathlib import Path

from pudato.protocol import DataReference

LAKE_SCHEME = "ducklake"
DUCKDB_SCHEME = "duckdb"


def s3_object(bucket: str, key: str, **facets: object) -> DataReference:
    return DataReference(namespace=f"s3://{bucket}", name=key.lstrip("/"), facets=dict(facets))


def local_file(path: Path | str, **facets: object) -> DataReference:
    return DataReference(namespace="file", name=str(Path(path).resolve()), facets=dict(facets))


def logic_file(repo: str, path: str, sha: str, **facets: object) -> DataReference:
    """A file in the logic repository at one commit: named by the repository, never by a checkout's path.

    A local repository path becomes a ``file://`` URL, so every worker names it alike.
    """
    namespace = repo if "://" in repo else f"file://{Path(repo).resolve()}" if repo else "logic"
    return DataReference(namespace=namespace.rstrip("/"), name=path.lstrip("/"), facets={"version": sha, **facets})


def warehouse_table(namespace: str, qualified_table: str, **facets: object) -> DataReference:
    """A table in the warehouse whose namespace is ``namespace`` (the backend's ``namespace``)."""
    schema, _, table = qualified_table.rpartition(".")
    return DataReference(namespace=namespace, name=f"{schema or 'main'}.{table}", facets=dict(facets))


def split_uri(text: str) -> tuple[str | None, str]:
    """``s3://bucket/key`` → (``s3://bucket``, ``key``); ``file:///p`` → (``file``, ``/p``); a bare name → (None, name).

    The inverse of :attr:`DataReference.uri`, for names people type.
    """
    if text.startswith("file://"):
        return "file", text.removeprefix("file://")
    scheme, separator, rest = text.partition("://")
    if not separator:
        return None, text
    authority, _, name = rest.partition("/")
    return f"{scheme}://{authority}", name


def lake_namespace(lake: str) -> str:
    return f"{LAKE_SCHEME}://{lake}"


def duckdb_namespace(database: str) -> str:
    return f"{DUCKDB_SCHEME}://{database}"


def lake_table(lake: str, qualified_table: str, **facets: object) -> DataReference:
    return warehouse_table(lake_namespace(lake), qualified_table, **facets)


def duckdb_table(database: str, qualified_table: str, **facets: object) -> DataReference:
    return warehouse_table(duckdb_namespace(database), qualified_table, **facets)


def is_warehouse_table(reference: DataReference) -> bool:
    return reference.namespace.startswith((f"{LAKE_SCHEME}://", f"{DUCKDB_SCHEME}://"))

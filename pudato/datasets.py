"""Dataset names: one rule for every handler, after OpenLineage's naming spec.

A dataset is a namespace plus a name. Two handlers that touch the same data
must produce the same pair, or lineage cannot join across them:

=============  ======================  ==================
what           namespace               name
=============  ======================  ==================
S3 object      ``s3://{bucket}``       ``{key}``
local file     ``file``                ``{absolute path}``
DuckDB table   ``duckdb://{database}`` ``{schema}.{table}``
=============  ======================  ==================
"""

from __future__ import annotations

from pathlib import Path

from pudato.protocol import DataReference


def s3_object(bucket: str, key: str, **facets: object) -> DataReference:
    return DataReference(namespace=f"s3://{bucket}", name=key.lstrip("/"), facets=dict(facets))


def local_file(path: Path | str, **facets: object) -> DataReference:
    return DataReference(namespace="file", name=str(Path(path).resolve()), facets=dict(facets))


def duckdb_table(database: str, qualified_table: str, **facets: object) -> DataReference:
    schema, _, table = qualified_table.rpartition(".")
    return DataReference(
        namespace=f"duckdb://{database}",
        name=f"{schema or 'main'}.{table}",
        facets=dict(facets),
    )


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

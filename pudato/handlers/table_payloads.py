"""The payload every table action starts from: a checked table name."""

from __future__ import annotations

from pydantic import field_validator

from pudato.backends.warehouse import parse_table_name
from pudato.handlers.base import Payload


class TablePayload(Payload):
    table: str

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        parse_table_name(value)  # UnsafeInput, not a validation error: the name was refused
        return value

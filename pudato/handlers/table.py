"""The table handler: create, load, insert, upsert, describe, list and drop warehouse tables.

Names in payloads are checked (:func:`~pudato.backends.warehouse.parse_table_name`)
and quoted; values always travel as statement parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator

from pudato.backends.logic import LogicRepository, logic_backend
from pudato.backends.warehouse import (
    TableName,
    check_identifier,
    parse_table_name,
)
from pudato.backends.warehouse.session import Session
from pudato.errors import InvalidCommand, NotFound
from pudato.handlers import table_load
from pudato.handlers.base import Payload, action
from pudato.handlers.table_load import LoadPayload
from pudato.handlers.table_payloads import TablePayload
from pudato.handlers.warehouse import WarehouseHandler
from pudato.protocol import Command, DataReference, Event, Outcome

# A type name, the words of a multi-word type (DOUBLE PRECISION, TIMESTAMP WITH TIME ZONE), an optional
# (precision[, scale]) and array brackets: nothing else, so no DEFAULT, GENERATED, constraint or SQL rides along.
_TYPE = re.compile(
    r"[A-Za-z][A-Za-z0-9_]*(?: (?:PRECISION|WITH|WITHOUT|TIME|ZONE|VARYING))*"
    r"(?: ?\(\d{1,4}(?:, ?\d{1,4})?\))?(?:\[\d{0,9}\])*",
    re.IGNORECASE,
)
_MAX_ROWS = 10_000

Row = dict[str, Any]


class CreatePayload(TablePayload):
    columns: dict[str, str] = Field(min_length=1)
    primary_key: list[str] = Field(default_factory=list)
    if_not_exists: bool = False

    @field_validator("columns")
    @classmethod
    def _types(cls, value: dict[str, str]) -> dict[str, str]:
        for column, type_ in value.items():
            if not _TYPE.fullmatch(type_) or len(type_) > 100:
                raise ValueError(f"column {column!r} has type {type_!r}, which is not a plain DuckDB type: a type "
                                 "name with an optional (precision, scale), e.g. DECIMAL(18,2); no DEFAULT, "
                                 "GENERATED or constraint")
        return value


class RowsPayload(TablePayload):
    rows: list[Row] = Field(min_length=1, max_length=_MAX_ROWS)


class UpsertPayload(RowsPayload):
    key: list[str] = Field(min_length=1)


class ListPayload(Payload):
    schema_: str | None = Field(default=None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        return check_identifier(value, "schema") if value is not None else None


class DropPayload(TablePayload):
    if_exists: bool = False


class TableHandler(WarehouseHandler):
    """Warehouse tables: each action opens the warehouse once and closes it before returning."""

    name = "table"
    _logic: LogicRepository | None = None

    @action("create", CreatePayload)
    def create(self, payload: CreatePayload) -> Outcome:
        name = parse_table_name(payload.table)
        missing = [k for k in payload.primary_key if k not in payload.columns]
        if missing:
            raise InvalidCommand(f"primary_key names columns not in columns: {missing}")
        # A lake has no constraints: the key is kept in the Result, and upserts name their own key.
        enforced = self.warehouse.enforces_primary_keys
        with self.warehouse.session() as session:
            existing = session.find(name, views=True)
            if existing and payload.if_not_exists:
                return self._unchanged(session, *existing)
            if existing:
                raise InvalidCommand(f"table {existing[0]} already exists; set if_not_exists to accept that")

            def create(session: Session) -> None:
                session.ensure_schema(name)
                session.create_table(name, payload.columns, payload.primary_key if enforced else ())

            session.atomic(create)
            output = self._reference(session, name)
        data: dict[str, Any] = {"table": name.qualified, "created": True, "columns": output.facets["columns"]}
        if payload.primary_key:
            data["primary_key"] = {"columns": payload.primary_key, "enforced": enforced}
        return Outcome(
            outputs=[output],
            executions=session.executions,
            data=data,
            events=[Event(type="table.created", dataset=output)],
        )

    @action("load", LoadPayload)
    def load(self, payload: LoadPayload, command: Command) -> Outcome:
        return table_load.load(self, payload, command)

    @property
    def logic(self) -> LogicRepository:
        """The logic repositories contracts are read from; built on first use."""
        if self._logic is None:
            self._logic = logic_backend(self.settings)
        return self._logic

    @action("insert", RowsPayload)
    def insert(self, payload: RowsPayload) -> Outcome:
        name = parse_table_name(payload.table)
        with self.warehouse.session() as session:
            name, types, rows = self._matched_rows(session, name, payload.rows)
            inserted = session.atomic(lambda s: s.insert_rows(name.sql, types, rows))
            output = self._reference(session, name)
        return Outcome(
            outputs=[output],
            executions=session.executions,
            data={"table": name.qualified, "inserted": inserted, "rows": output.facets["rows"]},
            events=[Event(type="table.loaded", dataset=output, detail={"inserted": inserted})],
        )

    @action("upsert", UpsertPayload)
    def upsert(self, payload: UpsertPayload) -> Outcome:
        name = parse_table_name(payload.table)
        with self.warehouse.session() as session:
            name, types, rows = self._matched_rows(session, name, payload.rows, required=payload.key)
            stored = {_fold(c): c for c in types}
            keys = [stored[_fold(k)] for k in payload.key]
            for number, row in enumerate(rows, start=1):
                if any(row.get(k) is None for k in keys):
                    raise InvalidCommand(f"row {number} has no value for a key column {keys}", row=number)
            inserted, updated = session.atomic(lambda s: s.upsert(name, types, keys, rows))
            output = self._reference(session, name)
        return Outcome(
            outputs=[output],
            executions=session.executions,
            data={"table": name.qualified, "inserted": inserted, "updated": updated, "rows": output.facets["rows"]},
            events=[Event(type="table.loaded", dataset=output, detail={"inserted": inserted, "updated": updated})],
        )

    @action("describe", TablePayload)
    def describe(self, payload: TablePayload) -> Outcome:
        name = parse_table_name(payload.table)
        with self.warehouse.session(read_only=True) as session:
            name, kind = self._require(session, name, views=True)
            reference = self._reference(session, name, kind=kind)
        return Outcome(
            inputs=[reference],
            data={"table": name.qualified, "kind": kind, **reference.facets},
        )

    @action("list", ListPayload)
    def list_tables(self, payload: ListPayload) -> Outcome:
        with self.warehouse.session(read_only=True) as session:
            found = [
                {"table": n.qualified, "kind": kind, **({"rows": session.count(n)} if kind == "table" else {})}
                for n, kind in session.relations(payload.schema_)
            ]
        return Outcome(data={"database": self.warehouse.database_name, "tables": found})

    @action("drop", DropPayload)
    def drop(self, payload: DropPayload) -> Outcome:
        name = parse_table_name(payload.table)
        with self.warehouse.session() as session:
            existing = session.find(name)
            if existing is None and payload.if_exists:
                return Outcome(data={"table": name.qualified, "dropped": False})
            name, _ = self._require(session, name)
            reference = self._reference(session, name)
            session.atomic(lambda s: s.drop_table(name))
        return Outcome(
            inputs=[reference],
            executions=session.executions,
            data={"table": name.qualified, "dropped": True},
            events=[Event(type="table.dropped", dataset=self.warehouse.reference(name))],
        )

    # -- helpers -------------------------------------------------------------

    def _reference(self, session: Session, name: TableName, **facets: Any) -> DataReference:
        """The table as a dataset, with its version: snapshot id (lake), row count, schema fingerprint."""
        # Counting a view would run it; only stored tables get a row count and a version.
        if facets.get("kind", "table") == "table":
            facets.update(session.version(name).facets())
        else:
            facets["columns"] = [{"name": c["name"], "type": c["type"]} for c in session.columns(name)]
        return self.warehouse.reference(name, **{k: v for k, v in facets.items() if v is not None})

    def _unchanged(self, session: Session, name: TableName, kind: str) -> Outcome:
        output = self._reference(session, name, kind=kind)
        return Outcome(outputs=[output], data={"table": name.qualified, "kind": kind, "created": False})

    @staticmethod
    def _require(session: Session, name: TableName, views: bool = False) -> tuple[TableName, str]:
        found = session.find(name, views=views)
        if found is None:
            raise NotFound(f"table {name} does not exist in the warehouse", table=name.qualified)
        return found

    def _matched_rows(
        self, session: Session, name: TableName, rows: Sequence[Row], required: Sequence[str] = ()
    ) -> tuple[TableName, dict[str, str], list[Row]]:
        """The table's stored name, its column types, and the rows keyed by stored column names.

        Payload names match columns case-insensitively, as DuckDB's do; unknown ones are refused.
        """
        name, _ = self._require(session, name)
        types = {c["name"]: c["type"] for c in session.columns(name)}
        stored = {_fold(c): c for c in types}
        asked = {k for row in rows for k in row} | set(required)
        unknown = sorted(k for k in asked if _fold(k) not in stored)
        if unknown:
            raise InvalidCommand(
                f"table {name} has no column(s) {unknown}; it has {sorted(types)}",
                table=name.qualified,
            )
        return name, types, [{stored[_fold(k)]: v for k, v in row.items()} for row in rows]


def _fold(name: str) -> str:
    # DuckDB matches identifiers case-insensitively, so payloads may too.
    return name.lower()

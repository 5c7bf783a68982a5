"""The query handler: run one SELECT over warehouse tables and stored files.

The SQL comes from a message, so it runs read-only and sandboxed: DuckDB may
read only the storage objects the payload names as ``sources`` (exposed as
temp views) and write only the result file of ``output``. Results come back
bounded (``limit``), or whole as a Parquet/CSV object in storage.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pudato.backends.logic import LogicRepository, logic_backend
from pudato.backends.warehouse import TableName, check_identifier, quote_identifier
from pudato.backends.warehouse.session import Session
from pudato.backends.warehouse.sql import ENGINE, parse_statements
from pudato.backends.warehouse.typed import csv_select
from pudato.contracts.model import ColumnRead, Parsing, merge_options
from pudato.contracts.reading import read_contract
from pudato.errors import InvalidCommand, LimitExceeded, PudatoError
from pudato.handlers.base import Payload, action
from pudato.handlers.csv_options import Format, check_encoding, column_names, format_for, utf8_file
from pudato.handlers.table_load import release_reads
from pudato.handlers.warehouse import WarehouseHandler
from pudato.protocol import (
    Command,
    DataReference,
    Event,
    ExecutionRecord,
    Outcome,
    utcnow,
)

# (every table at this snapshot, or None; these tables at these snapshots)
Snapshots = tuple[int | None, dict[str, int]]

_SQL_MAX = 100_000
_DEFAULT_LIMIT = 1000


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    format: Format | None = None
    # CSV only: read as a load with this contract reads it (from the logic repository at the job's commit).
    contract: str | None = Field(default=None, min_length=1, max_length=200)
    encoding: str = "auto"

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return check_encoding(value)


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    format: Literal["parquet", "csv"] = "parquet"


class RunPayload(Payload):
    sql: str = Field(min_length=1, max_length=_SQL_MAX)
    sources: dict[str, Source] = Field(default_factory=dict)
    limit: int | None = Field(default=None, ge=1, description="rows to return; default 1000 (or max_rows if lower)")
    output: Output | None = None
    # Read every table as it was then: a lake snapshot id, or a job or step id (see pudato.versions).
    as_of: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("sources")
    @classmethod
    def _aliases(cls, value: dict[str, Source]) -> dict[str, Source]:
        for alias in value:
            check_identifier(alias, "source alias")
        return value


class QueryHandler(WarehouseHandler):
    """Read-only SQL over the warehouse and storage objects."""

    name = "query"
    _logic: LogicRepository | None = None

    @property
    def logic(self) -> LogicRepository:
        """The logic repositories a source's contract is read from; built on first use."""
        if self._logic is None:
            self._logic = logic_backend(self.settings)
        return self._logic

    @action("run", RunPayload)
    def run(self, payload: RunPayload, command: Command) -> Outcome:
        read: list[DataReference] = []
        try:
            return self._run(payload, command, read)
        except PudatoError as exc:
            # A query that failed still records what it was reading (the sources, the tables named).
            if exc.outcome is None and read:
                exc.outcome = Outcome(inputs=read)
            raise

    def _run(self, payload: RunPayload, command: Command, read: list[DataReference]) -> Outcome:
        max_rows = self.settings.warehouse.max_rows
        limit = payload.limit if payload.limit is not None else min(_DEFAULT_LIMIT, max_rows)
        if limit > max_rows:
            raise InvalidCommand(f"limit {limit} is above the maximum of {max_rows} (warehouse.max_rows)")
        sql = _single_select(payload.sql)
        if payload.output:
            self.storage.reference(payload.output.key)  # refuse a bad key before any work
        with ExitStack() as stack:
            views, inputs, files = self._sources(stack, payload.sources, command)
            read.extend(inputs)
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pudato-query-")))
            writes = [workdir] if payload.output else []
            snapshots = self._snapshots(payload, command)
            with self._session(snapshots, files, writes) as session:
                for alias, reader in views.items():
                    view = f"CREATE TEMP VIEW {quote_identifier(alias)} AS SELECT * FROM {reader}"
                    session.execute(view, record=False)
                tables = session.tables_read(sql, skip=list(views))
                read[:0] = [self.warehouse.reference(t) for t in tables]
                if payload.output:
                    target = workdir / f"result.{payload.output.format}"
                    columns, written = session.copy_to(sql, payload.output.format, target)
                else:
                    started_at, clock = utcnow(), time.perf_counter()
                    cursor = session.execute(sql, record=False)
                    columns = _columns(cursor.description)
                    with session.engine_call(sql):  # DuckDB streams: the work may happen while fetching
                        fetched = cursor.fetchmany(limit + 1)
                    session.executions.append(_record(sql, started_at, clock, min(len(fetched), limit)))
                # The versions read: a read-only session sees one snapshot throughout, and after
                # the query the files' metadata are in DuckDB's cache.
                inputs = [self._table_input(session, t, snapshots) for t in tables] + inputs
            if payload.output:
                # Upload after closing the warehouse: other workers need not wait on the network.
                return self._store(payload.output, target, columns, written, inputs, session.executions)
        rows = [[_jsonable(v) for v in row] for row in fetched[: limit]]
        _check_size(rows, self.settings.warehouse.max_result_bytes)
        return Outcome(
            inputs=inputs,
            executions=session.executions,
            data={
                "columns": columns,
                "rows": rows,
                "row_count": len(rows),
                "truncated": len(fetched) > limit,
            },
        )

    def _table_input(self, session: Session, table: TableName, snapshots: Snapshots) -> DataReference:
        if session.find(table) is None:  # a view: its own inputs are what it reads
            return self.warehouse.reference(table, kind="view")
        everything, pinned = snapshots
        at = pinned.get(table.qualified, everything)
        return self.warehouse.reference(table, **session.version(table, at).facets())

    def _snapshots(self, payload: RunPayload, command: Command) -> Snapshots:
        """The snapshot every table is read at (``as_of``), and the tables an exact rerun pins to theirs."""
        if payload.as_of is not None:
            from pudato.registry.repository import Registry
            from pudato.versions import snapshot_as_of

            return snapshot_as_of(Registry(self.settings.registry.url), payload.as_of), {}
        pins = {pin.name: int(pin.version) for pin in command.pinned_inputs
                if pin.namespace == self.warehouse.namespace and pin.version and pin.version.isdigit()}
        return None, pins

    @contextmanager
    def _session(self, snapshots: Snapshots, files: list[str], writes: list[Path]) -> Iterator[Session]:
        """The sandboxed read-only session the SQL runs in: today's tables, or some or all at a snapshot."""
        everything, pinned = snapshots
        if everything is None and not pinned:
            with self.warehouse.query_session(files, writes) as session:
                yield session
            return
        if everything is not None:
            opened = self.warehouse.session_at(everything)
        else:
            # The recorded step read its tables in one read-only session, so at one snapshot.
            opened = self.warehouse.session_at(max(pinned.values()), tables=sorted(pinned))
        with opened as session:
            session.restrict(files=files, directories=writes)
            yield session

    def _sources(
        self, stack: ExitStack, sources: dict[str, Source], command: Command
    ) -> tuple[dict[str, str], list[DataReference], list[str]]:
        """Where each source object is read from, and the table function reading it.

        Parquet is read in place (an s3:// URL) when the storage and the warehouse
        can; everything else, and an object pinned at an older version (an exact
        rerun), from a local copy (CSV is made UTF-8 first).
        """
        views: dict[str, str] = {}
        inputs: list[DataReference] = []
        files: list[str] = []
        for alias, source in sources.items():
            version = self.pinned_version(source.key, command)
            info = self.storage.head(source.key, version)  # first: it refuses an unsafe key
            fmt = format_for(source.key, source.format)
            if fmt == "xlsx":
                raise InvalidCommand(
                    f"source {alias!r} is a spreadsheet; load it into a table (format: xlsx) and query the table",
                    key=source.key,
                )
            if fmt != "csv" and (source.contract or source.encoding != "auto"):
                raise InvalidCommand(f"source {alias!r}: contract and encoding apply to CSV sources only")
            reference = self.storage.reference(source.key, info)
            inputs.append(reference)
            location = self.storage.direct_url(source.key) if fmt == "parquet" and version is None else None
            if location is None:
                path = stack.enter_context(self.storage.local_path(source.key, version))
                if fmt == "csv":
                    path, _ = stack.enter_context(utf8_file(path, source.encoding, reference.uri))
                location = str(path.resolve())
            files.append(location)
            # A location we chose (an object URL, a storage file or our temp copy), not text from the message.
            if fmt == "csv":  # read as a load reads it: the same columns, types and rows
                views[alias] = self._csv_view(location, reference.uri, path, source.contract, command)
            else:
                views[alias] = Session.read_sql(fmt, location)
        return views, inputs, files

    def _csv_view(self, location: str, label: str, path: Path, contract: str | None, command: Command) -> str:
        """The CSV source as a load reads it: with the named contract's columns, types and rules, if any."""
        names = functools.partial(column_names, path=path, delimiter=None)
        if contract is None:
            return csv_select(location, label, lambda headers: [
                ColumnRead(n, h) for h, n in zip(headers, names(headers), strict=True)
            ])
        if not (command.logic_repo and command.logic_version):
            raise InvalidCommand(
                f"contract {contract!r} is read from the logic repository at the job's commit, "
                "but this step has none: run it in a pipeline",
                contract=contract,
            )
        found = read_contract(self.logic, str(command.logic_repo), str(command.logic_version), contract, True)
        rules = merge_options(found, Parsing(), {}, {}, None)
        return csv_select(location, label, lambda headers: release_reads(headers, names(headers), rules),
                          rules.text, rules.key)

    def _store(
        self,
        output: Output,
        target: Path,
        columns: list[dict[str, str]],
        rows: int,
        inputs: list[DataReference],
        executions: list[ExecutionRecord],
    ) -> Outcome:
        content_type = "application/vnd.apache.parquet" if output.format == "parquet" else "text/csv"
        info = self.storage.put_file(output.key, target, content_type)
        written = self.storage.reference(output.key, info)
        written = written.model_copy(update={"facets": {**written.facets, "rows": rows, "columns": columns}})
        return Outcome(
            inputs=inputs,
            outputs=[written],
            executions=executions,
            data={"columns": columns, "row_count": rows, "object": info.model_dump(exclude_none=True)},
            events=[Event(type="query.written", dataset=written, detail={"rows": rows, "format": output.format})],
        )


def _columns(description: Any) -> list[dict[str, str]]:
    return [{"name": d[0], "type": str(d[1])} for d in description]


def _single_select(sql: str) -> str:
    """The SQL of the one SELECT statement in ``sql``, else InvalidCommand."""
    statements = parse_statements(sql)
    if len(statements) != 1:
        raise InvalidCommand(f"sql must hold exactly one statement, found {len(statements)}")
    if statements[0].type != "SELECT":
        raise InvalidCommand(
            f"query.run runs SELECT statements only, not {statements[0].type}; "
            "change tables with the table or transform handler"
        )
    return statements[0].query.strip()


def _record(sql: str, started_at: datetime, clock: float, rows: int) -> ExecutionRecord:
    return ExecutionRecord(
        engine=ENGINE,
        statement=sql,
        started_at=started_at,
        duration_ms=(time.perf_counter() - clock) * 1000,
        rows=rows,
    )


def _jsonable(value: Any) -> Any:
    """A value JSON can carry: dates, decimals and the like become strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (datetime, date, time_of_day)):
        return value.isoformat()
    if isinstance(value, (Decimal, timedelta, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _check_size(rows: list[list[Any]], cap: int) -> None:
    """Refuse an inline result too big to carry in a Result (JSON bytes); name the way out."""
    size = len(json.dumps(rows, default=str))
    if size > cap:
        raise LimitExceeded(
            f"the query's result is {size} bytes of JSON, above the cap of {cap} (PUDATO_WAREHOUSE__MAX_RESULT_BYTES): "
            "lower 'limit', select fewer columns, or write the result to storage with 'output'",
            size=size, cap=cap)

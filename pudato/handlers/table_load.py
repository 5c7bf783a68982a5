"""The table handler's ``load``: one file into one table, by its contract, with nothing lost.

The file is staged as text; its headers are matched to the dataset's columns
(the table's, else the contract's), which gives the drift report; each column is
read with the target's type (an append or upsert never infers again), the
contract's type, the payload's, or, for a new column, the narrowest type every
value fits. Rows that fail a check go to ``<table>__rejected``; the Result
carries the drift and validation reports. Policies and ``max_rejected`` may
fail the step, and then nothing is written.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator

from pudato.backends.storage import sha256_of_file
from pudato.backends.warehouse import TableName, parse_table_name
from pudato.backends.warehouse.checks import check_rows, write_rejected, write_rows
from pudato.backends.warehouse.typed import Staged, infer_types, stage_file
from pudato.contracts.drift import Drift, DriftRefused, Match, match_columns, retyped
from pudato.contracts.model import (
    ColumnRead,
    Contract,
    LoadRules,
    Parsing,
    check_format,
    check_type,
    merge_options,
)
from pudato.contracts.reading import read_contract
from pudato.contracts.validation import ValidationReport
from pudato.errors import InvalidCommand
from pudato.handlers.base import describe_validation_error
from pudato.handlers.csv_options import (
    LoadFormat,
    blank_header_names,
    c1_lines,
    check_encoding,
    format_for,
    header_fields,
    normalize_name,
    normalize_names,
    not_a_spreadsheet,
    utf8_file,
)
from pudato.handlers.table_payloads import TablePayload
from pudato.protocol import Command, DataReference, Event, Outcome

if TYPE_CHECKING:
    from pudato.backends.warehouse.session import Session
    from pudato.handlers.table import TableHandler


class LoadPayload(TablePayload, Parsing):
    key: str
    format: LoadFormat | None = None
    sheet: str | None = Field(default=None, min_length=1, max_length=100)  # xlsx only; default the first
    mode: Literal["replace", "append", "upsert"] = "replace"
    # CSV only:
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    header: bool = True
    encoding: str = "auto"
    all_varchar: bool = False
    # Every format:
    normalize_headers: bool = True
    skip_blank_records: bool = True
    # Reading rules (a contract may say the same; the payload wins):
    contract: str | dict[str, Any] | None = None
    types: dict[str, str] = Field(default_factory=dict)
    date_formats: dict[str, str] = Field(default_factory=dict)
    unique_key: list[str] | None = None

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return check_encoding(value)

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None and value in "\"'\r\n\x00":
            raise ValueError(f"{value!r} cannot be a delimiter")
        return value

    @field_validator("types")
    @classmethod
    def _types(cls, value: dict[str, str]) -> dict[str, str]:
        return {c: check_type(t, c) for c, t in value.items()}

    @field_validator("date_formats")
    @classmethod
    def _formats(cls, value: dict[str, str]) -> dict[str, str]:
        return {c: check_format(f, c) for c, f in value.items()}


def contract_for(handler: TableHandler, payload: LoadPayload, command: Command) -> Contract | None:
    """The contract: inline in the payload, named in it, or ``datasets/<table>.yml`` at the job's SHA."""
    if isinstance(payload.contract, dict):
        try:
            return Contract.model_validate({"name": payload.table, **payload.contract})
        except ValidationError as exc:
            raise InvalidCommand(describe_validation_error(exc, "contract in the payload")) from None
    pinned = command.logic_repo and command.logic_version
    if payload.contract and not pinned:
        raise InvalidCommand(
            f"contract {payload.contract!r} is read from the logic repository at the job's commit, "
            "but this step has none: run it in a pipeline, or give the contract inline",
        )
    if not pinned:
        return None
    name = payload.contract or parse_table_name(payload.table).table
    return read_contract(
        handler.logic, str(command.logic_repo), str(command.logic_version), name, bool(payload.contract)
    )


def load(handler: TableHandler, payload: LoadPayload, command: Command) -> Outcome:
    name = parse_table_name(payload.table)
    version = handler.pinned_version(payload.key, command)
    info = handler.storage.head(payload.key, version)  # first: it refuses an unsafe key
    fmt = format_for(payload.key, payload.format)
    try:
        rules = merge_options(
            contract_for(handler, payload, command), payload, payload.types, payload.date_formats, payload.unique_key
        )
    except ValueError as exc:
        raise InvalidCommand(str(exc)) from None
    if payload.mode == "upsert" and not rules.key:
        raise InvalidCommand("mode upsert needs a key: give unique_key, or a key in the contract")
    warnings: list[str] = []
    with ExitStack() as stack:
        path = stack.enter_context(handler.storage.local_path(payload.key, version))
        if info.sha256 is None:  # put by something other than Pudato: the version still gets its digest
            info = info.model_copy(update={"sha256": sha256_of_file(path)})
        source = handler.storage.reference(payload.key, info)
        label = source.uri + (f" (version {info.version})" if info.version else "")
        not_a_spreadsheet(path, fmt, label)
        encoding = None
        if fmt == "csv":
            path, encoding = stack.enter_context(utf8_file(path, payload.encoding, label))
            lines = c1_lines(path) if encoding in ("latin-1", "iso8859-1") else []
            if lines:
                warnings.append(
                    f"{label} read as {encoding} has C1 control characters on lines {lines}: "
                    "it is probably cp1252 (Windows); set encoding: cp1252"
                )
        with handler.warehouse.session() as session:
            written = header_fields(path, payload.delimiter) if fmt == "csv" and payload.header else None
            staged = stage_file(session, fmt, str(path), label, payload.header, payload.delimiter, payload.sheet,
                                getattr(handler.warehouse, "extension_dir", None), len(written) if written else None)
            blank = blank_header_names(staged.headers, written) if written else {}
            found = session.find(name)
            plan = _plan(session, payload, rules, staged, found[0] if found else None, blank)
            unknown = [k for k in rules.key if k not in {r.name for r in plan.reads}]
            if unknown:
                raise InvalidCommand(
                    f"the key names column(s) {unknown} that {label} does not have; "
                    f"its columns are {[r.name for r in plan.reads]}",
                    key=unknown,
                )
            dataset = handler.warehouse.reference(plan.table or name)
            where = {"namespace": dataset.namespace, "name": dataset.name, "source": source.uri}
            plan.drift.rows = {"before": plan.rows_before, "release": None, "after": None}
            report = None
            if plan.mode != "replace" and staged.text:
                # An append reads with the table's types: a column changed type only if some value fails it.
                report = _check(session, payload, rules, staged, plan)
                _retyped_by_values(session, rules, staged, plan, report)
            try:
                plan.drift.check(dataset.uri, **where)
            except DriftRefused as exc:  # refused, and still announced: the release did drift
                event = Event(type="dataset.drifted", dataset=dataset, detail=plan.drift.as_dict())
                exc.outcome = Outcome(inputs=[source], events=[event])
                raise
            report = report or _check(session, payload, rules, staged, plan)
            report.enforce(rules.max_rejected, label, **where)

            def write(session: Session) -> tuple[int, int, TableName | None]:
                target = plan.table or name
                inserted, updated = write_rows(session, target, plan.reads, plan.mode, plan.new_columns, rules.key)
                rejects = None
                if report.rejected:
                    rejects, _ = write_rejected(
                        session, target, staged, plan.reads, source.uri, info.version, command.job_id
                    )
                return inserted, updated, rejects

            inserted, updated, rejects = session.atomic(write)
            target = plan.table or name
            output = handler._reference(session, target, source_sha256=info.sha256, source=source.uri)
            outputs = [output]
            if rejects is not None:
                outputs.append(handler._reference(session, rejects, quarantine_of=target.qualified))
    plan.drift.rows = {"before": plan.rows_before, "release": report.rows, "after": output.facets.get("rows")}
    return _outcome(
        target, fmt, encoding, source, outputs, session, plan, staged, report, inserted, updated, rules, warnings
    )


def _check(session: Session, payload: LoadPayload, rules: LoadRules, staged: Staged, plan: _Plan) -> ValidationReport:
    existing = plan.table if payload.mode == "append" and rules.key else None
    return check_rows(
        session, staged, plan.reads, rules.text, rules.key, existing, payload.skip_blank_records
    )


def _retyped_by_values(
    session: Session, rules: LoadRules, staged: Staged, plan: _Plan, report: ValidationReport
) -> None:
    """The columns of an append whose values the table's type does not take, with the type they have instead."""
    failing = [r for r in plan.reads if r.source and r.type and report.by_column.get(r.name, {}).get("type")]
    if not failing:
        return
    untyped = [ColumnRead(r.name, r.source, None, r.format) for r in failing]
    release = infer_types(session, staged, untyped, rules.text, empty="")
    matches = [Match(str(r.source), r.name) for r in failing]
    plan.drift.retyped = retyped(
        matches, {str(r.source): release.get(r.name) for r in failing}, {r.name: str(r.type) for r in failing},
        widening=True,
    )
    plan.drift.apply(rules.policies, ("retyped",))


class _Plan:
    def __init__(
        self,
        table: TableName | None,
        mode: Literal["replace", "append", "upsert"],
        reads: list[ColumnRead],
        new_columns: list[ColumnRead],
        drift: Drift,
        rows_before: int | None,
        renamed: dict[str, str],
    ) -> None:
        self.table, self.mode, self.reads, self.new_columns = table, mode, reads, new_columns
        self.drift, self.rows_before, self.renamed = drift, rows_before, renamed


def _plan(
    session: Session,
    payload: LoadPayload,
    rules: LoadRules,
    staged: Staged,
    table: TableName | None,
    blank: dict[str, str],
) -> _Plan:
    """Which header fills which column, with which type; and the drift that implies."""
    names = normalize_names(staged.headers) if payload.normalize_headers else list(staged.headers)
    names = [blank.get(h, n) for h, n in zip(staged.headers, names, strict=True)]
    existing = {c["name"]: c["type"] for c in session.columns(table)} if table else {}
    keep_table = bool(table) and payload.mode != "replace"
    expected = list(existing) if table else (list(rules.columns) or None)
    matches, drift = match_columns(staged.headers, names, expected, rules.columns, normalize_name)
    if expected is not None and not table:
        # A first release defines the table: columns the contract does not name are not drift.
        drift.against, drift.added = "contract", []
    reads = [_read(m, rules, existing if keep_table else {}, payload.all_varchar) for m in matches]
    # A column the release lacks stays in the table (append) or the contract (any mode): NULL.
    if keep_table or rules.columns:
        for column in drift.removed:
            reads.append(
                ColumnRead(
                    column,
                    None,
                    existing.get(column) or rules.types.get(column) or "VARCHAR",
                    nullable=rules.columns[column].nullable if column in rules.columns else True,
                )
            )
    inferred = infer_types(session, staged, reads, rules.text)
    reads = [r if r.type else _typed(r, inferred.get(r.name, "VARCHAR")) for r in reads]
    if table and payload.mode == "replace":
        drift.retyped = retyped(matches, {r.source or "": str(r.type) for r in reads}, existing)
    elif not staged.text:
        drift.retyped = retyped(matches, staged.types, {r.name: str(r.type) for r in reads}, widening=keep_table)
    drift.apply(rules.policies)
    new_columns = [r for r in reads if keep_table and r.name not in existing]
    rows_before = session.count(table) if table else None
    renamed = {m.header: m.column for m in matches if m.header != m.column}
    for stand_in, stable in blank.items():  # a blank header has no name of its own: say so, not DuckDB's stand-in
        if stand_in in renamed:
            renamed[f"(blank header, column {stable.rsplit('_', 1)[1]})"] = renamed.pop(stand_in)
    return _Plan(table, payload.mode if keep_table else "replace", reads, new_columns, drift, rows_before, renamed)


def release_reads(headers: list[str], names: list[str], rules: LoadRules) -> list[ColumnRead]:
    """A release's columns as a first load reads them: headers matched to the contract's columns (by name or
    alias), with its types, formats and constraints; a contract column the file lacks is NULL."""
    matches, drift = match_columns(headers, names, list(rules.columns) or None, rules.columns, normalize_name)
    reads = [_read(m, rules, {}, False) for m in matches]
    for column in drift.removed if rules.columns else []:
        spec = rules.columns[column]
        reads.append(ColumnRead(column, None, rules.types.get(column) or "VARCHAR", nullable=spec.nullable))
    return reads


def _read(match: Match, rules: LoadRules, existing: dict[str, str], all_varchar: bool) -> ColumnRead:
    spec = rules.columns.get(match.column)
    type_ = existing.get(match.column) or rules.types.get(match.column) or ("VARCHAR" if all_varchar else None)
    return ColumnRead(
        name=match.column,
        source=match.header,
        type=type_,
        format=rules.formats.get(match.column),
        nullable=spec.nullable if spec else True,
        allowed=tuple(spec.allowed) if spec and spec.allowed is not None else None,
        pattern=spec.pattern if spec else None,
    )


def _typed(read: ColumnRead, type_: str) -> ColumnRead:
    return ColumnRead(read.name, read.source, type_, read.format, read.nullable, read.allowed, read.pattern, True)


def _outcome(
    target: TableName,
    fmt: LoadFormat,
    encoding: str | None,
    source: DataReference,
    outputs: list[DataReference],
    session: Session,
    plan: _Plan,
    staged: Staged,
    report: ValidationReport,
    inserted: int,
    updated: int,
    rules: LoadRules,
    warnings: list[str],
) -> Outcome:
    output = outputs[0]
    validation = report.as_dict()
    validation["records_read"] = staged.records
    validation["blank_records_skipped"] = staged.records - report.rows
    validation["short_records"] = {"count": staged.short_count, "rows": staged.short}
    validation["long_records"] = {"count": staged.long_count, "rows": staged.long}
    if staged.long_count:
        warnings.append(f"{staged.long_count} record(s) longer than the header: their extra fields are kept in "
                        f"columns named column_<position>; rows {staged.long[:20]}")
    if len(outputs) > 1:
        validation["rejected_table"] = outputs[1].name.rsplit("/", 1)[-1]
        validation["rejected_dataset"] = outputs[1].uri
    if staged.short_count:
        warnings.append(
            f"{staged.short_count} short record(s) padded with NULL: rows {[s['row'] for s in staged.short[:20]]}"
        )
    if report.rejected:
        warnings.append(f"{report.rejected} row(s) rejected: {report.counts}")
    drift = plan.drift.as_dict()
    warnings += plan.drift.warnings
    events = [Event(type="table.loaded", dataset=output, detail={"loaded": inserted, "mode": plan.mode})]
    if plan.drift.drifted:
        events.append(Event(type="dataset.drifted", dataset=output, detail=drift))
    data: dict[str, Any] = {
        "table": target.qualified,
        "mode": plan.mode,
        "format": fmt,
        "encoding": encoding,
        "loaded": inserted + updated,
        "inserted": inserted,
        "updated": updated,
        "rows": output.facets["rows"],
        "columns": output.facets["columns"],
        "renamed": plan.renamed,
        "contract": rules.describe(),
        "drift": drift,
        "validation": validation,
        "warnings": warnings,
    }
    return Outcome(inputs=[source], outputs=outputs, executions=session.executions, data=data, events=events)

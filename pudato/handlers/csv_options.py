"""Preparing messy files for DuckDB: formats, encodings and column names.

Public-sector CSVs arrive with byte-order marks, CRLF line endings, Windows
code pages and headers like ``2014-15 Actuals``. DuckDB reads UTF-8 well, so a
file in any other encoding is transcoded to a UTF-8 temp file here, in Python,
where every codec is available; column names are normalized afterwards by
aliasing them in the load's SELECT.
"""

from __future__ import annotations

import codecs
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pudato.errors import InvalidCommand

Format = Literal["csv", "parquet", "json"]
LoadFormat = Literal["csv", "parquet", "json", "xlsx"]

_SUFFIXES: dict[str, LoadFormat] = {
    ".xlsx": "xlsx",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
_CHUNK = 1 << 20
_NAME_MAX = 63


def format_for(key: str, given: LoadFormat | None) -> LoadFormat:
    """The payload's format, else the one the key's suffix implies."""
    if given:
        return given
    suffix = Path(key).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidCommand(
            f"cannot tell the format of {key!r} from its suffix; give format: csv, parquet, json or xlsx",
            key=key,
        )
    return _SUFFIXES[suffix]


def check_encoding(name: str) -> str:
    """``auto`` or a codec Python knows, as its canonical name."""
    if name == "auto":
        return name
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}") from None


def sniff_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM), UTF-16 by its BOM, else cp1252 (latin-1 if cp1252 fails)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if _decodes(path, "utf-8"):
        return "utf-8"
    # cp1252 leaves five bytes undefined; latin-1 maps every byte, so it is the last resort.
    return "cp1252" if _decodes(path, "cp1252") else "latin-1"


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _first_undecodable(path: Path, encoding: str) -> tuple[int, int] | None:
    """(byte offset, line number) of the first byte ``encoding`` cannot decode, or None."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines = 0, 1
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                at = max(0, exc.start)
                return offset + at, lines + block[:at].count(b"\n")
            offset += len(block)
            lines += block.count(b"\n")
    return None


@contextmanager
def utf8_file(path: Path, encoding: str = "auto", label: str = "the file") -> Iterator[tuple[Path, str]]:
    """A UTF-8 version of ``path`` (the file itself when it already is), and the encoding read."""
    with path.open("rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            raise InvalidCommand(f"{label} is compressed (gzip); CSV files must be stored uncompressed", dataset=label)
    used = sniff_encoding(path) if encoding == "auto" else codecs.lookup(encoding).name
    if used == "utf-8" and encoding != "auto":
        # An explicit utf-8 still tolerates a BOM: spreadsheet exports add one.
        with path.open("rb") as handle:
            if handle.read(3) == codecs.BOM_UTF8:
                used = "utf-8-sig"
    if used == "utf-8":
        bad = _first_undecodable(path, used)
        if bad is not None:
            column = _column_at(path, used, bad[0])
            raise InvalidCommand(
                f"{label} is not valid utf-8: byte {bad[0]} (line {bad[1]}{_in_column(column)}) is not UTF-8; "
                f"it is probably {sniff_encoding(path)}: set the payload's encoding to that, or to 'auto'",
                encoding=used,
                dataset=label,
                line=bad[1],
                column=column,
            )
        yield path, used
        return
    with tempfile.TemporaryDirectory(prefix="pudato-csv-") as folder:
        target = Path(folder) / "data.csv"
        try:
            # newline="" keeps CRLF and quoted line breaks exactly as they were.
            with path.open(encoding=used, newline="") as source, target.open("w", encoding="utf-8", newline="") as out:
                for block in iter(lambda: source.read(_CHUNK), ""):
                    out.write(block)
        except UnicodeDecodeError as exc:
            # The decoder's position is within its block; find the byte and its line in the file.
            byte, line = _first_undecodable(path, used) or (exc.start, None)
            column = _column_at(path, used, byte) if line is not None else None
            where = f" (line {line}{_in_column(column)})" if line is not None else ""
            raise InvalidCommand(
                f"{label} is not valid {used}: {exc.reason} at byte {byte}{where}; "
                f"it is probably {sniff_encoding(path)}: set the payload's encoding to that, or to 'auto'",
                encoding=used,
                dataset=label,
                line=line,
                column=column,
            ) from None
        yield target, used


def _column_at(path: Path, encoding: str, offset: int) -> str | None:
    """The header of the field holding byte ``offset`` (None on the header line, or past the header's fields)."""
    import csv

    start = max(0, offset - _CHUNK)
    with path.open("rb") as handle:
        handle.seek(start)
        before = handle.read(offset - start)
    if b"\n" not in before and start == 0:
        return None
    prefix = before.rsplit(b"\n", 1)[-1].decode(encoding, errors="replace")
    headers = header_fields(path, None)
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        delimiter = _guess_delimiter(handle.read(1 << 16))
    index = len(next(csv.reader([prefix], delimiter=delimiter), [""])) - 1 if prefix else 0
    return headers[index] or f"column_{index + 1}" if index < len(headers) else None


def _in_column(column: str | None) -> str:
    return f", column {column!r}" if column is not None else ""


_SPREADSHEETS = {
    b"PK\x03\x04": ("xlsx (a zip archive)", "give format: xlsx (and sheet: NAME for a sheet other than the first)"),
    b"\xd0\xcf\x11\xe0": ("xls (an OLE2 document)", "save it as xlsx or export the sheet as CSV"),
}
_C1 = re.compile("[\u0080-\u009f]")


def not_a_spreadsheet(path: Path, fmt: str, label: str) -> None:
    """Refuse a spreadsheet (or any zip) given as CSV or JSON, with the fix, before DuckDB tries to sniff it."""
    if fmt not in ("csv", "json"):
        return
    with path.open("rb") as handle:
        head = handle.read(4)
    for magic, (kind, fix) in _SPREADSHEETS.items():
        if head.startswith(magic):
            raise InvalidCommand(
                f"{label} is a spreadsheet, {kind}, not {fmt}: {fix}",
                dataset=label,
                format=fmt,
            )


def c1_lines(path: Path, limit: int = 20) -> list[int]:
    """Line numbers (1-based) holding C1 control characters: cp1252 text read as latin-1 shows them."""
    found: list[int] = []
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if _C1.search(line):
                found.append(number)
                if len(found) >= limit:
                    break
    return found


def header_fields(path: Path, delimiter: str | None) -> list[str]:
    """The first record's fields as written, to tell blank headers from DuckDB's stand-in names."""
    import csv

    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        sample = handle.read(1 << 16)
    first = next(csv.reader(sample.splitlines()[:1] or [""], delimiter=delimiter or _guess_delimiter(sample)), [])
    return [field.strip() for field in first]


def _guess_delimiter(sample: str) -> str:
    line = sample.split("\n", 1)[0]
    return max(",;\t|", key=line.count)


def blank_header_names(headers: list[str], written: list[str]) -> dict[str, str]:
    """Stable names for blank headers: ``column_<position>`` (1-based), keyed by DuckDB's stand-in."""
    if len(headers) < len(written):
        return {}
    # Columns past the header's last (from records longer than it) have no header either.
    written = written + [""] * (len(headers) - len(written))
    return {h: f"column_{i}" for i, (h, w) in enumerate(zip(headers, written, strict=True), start=1) if not w}


def column_names(headers: list[str], path: Path | None, delimiter: str | None, normalize: bool = True) -> list[str]:
    """The names a load gives a file's columns: normalized, blank headers as ``column_<position>``.

    ``path`` is the (UTF-8) CSV file, to tell blank headers from DuckDB's stand-ins; None for other formats.
    """
    names = normalize_names(headers) if normalize else list(headers)
    blank = blank_header_names(headers, header_fields(path, delimiter)) if path is not None else {}
    return [blank.get(h, n) for h, n in zip(headers, names, strict=True)]


def normalize_name(name: str) -> str:
    """``"2014-15 Actuals"`` → ``"_2014_15_actuals"``, ``"Dept Code"`` → ``"dept_code"``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if text[:1].isdigit():
        text = "_" + text
    return text[:_NAME_MAX].rstrip("_") or ""


def normalize_names(names: Iterable[str]) -> list[str]:
    """Normalized names in order, made unique with ``_2``, ``_3`` suffixes."""
    result: list[str] = []
    taken: set[str] = set()
    for position, name in enumerate(names, start=1):
        base = normalize_name(name) or f"column_{position}"
        candidate, suffix = base, 2
        while candidate in taken:
            candidate = f"{base[: _NAME_MAX - len(str(suffix)) - 1]}_{suffix}"
            suffix += 1
        taken.add(candidate)
        result.append(candidate)
    return result

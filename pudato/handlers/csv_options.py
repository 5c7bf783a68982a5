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

_SUFFIXES: dict[str, Format] = {
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


def format_for(key: str, given: Format | None) -> Format:
    """The payload's format, else the one the key's suffix implies."""
    if given:
        return given
    suffix = Path(key).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidCommand(
            f"cannot tell the format of {key!r} from its suffix; give format: csv, parquet or json",
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


@contextmanager
def utf8_file(path: Path, encoding: str = "auto") -> Iterator[tuple[Path, str]]:
    """A UTF-8 version of ``path`` (the file itself when it already is), and the encoding read."""
    with path.open("rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            raise InvalidCommand("compressed (gzip) CSV files are not supported; store them uncompressed")
    used = sniff_encoding(path) if encoding == "auto" else codecs.lookup(encoding).name
    if used == "utf-8" and encoding != "auto":
        # An explicit utf-8 still tolerates a BOM: spreadsheet exports add one.
        with path.open("rb") as handle:
            if handle.read(3) == codecs.BOM_UTF8:
                used = "utf-8-sig"
    if used == "utf-8":
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
            raise InvalidCommand(
                f"the file is not valid {used}: {exc.reason} at byte {exc.start}; "
                "give the right encoding, or 'auto'",
                encoding=used,
            ) from None
        yield target, used


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
        base = normalize_name(name) or f"column{position}"
        candidate, suffix = base, 2
        while candidate in taken:
            candidate = f"{base[: _NAME_MAX - len(str(suffix)) - 1]}_{suffix}"
            suffix += 1
        taken.add(candidate)
        result.append(candidate)
    return result

"""A reader's error in Pudato's words: the dataset's name instead of a temp path, and the line when known."""

from __future__ import annotations

import re
from pathlib import Path

from pudato.errors import InvalidCommand, PudatoError


def read_error(exc: PudatoError, fmt: str, location: str, label: str) -> PudatoError:
    """DuckDB's reader error as ours: the dataset's name instead of a temp path, no DuckDB options."""
    text = exc.message.replace(location, label)
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    first = re.sub(r"^DuckDB \w+: (\w+ Error: )?", "", first)
    fix = "check the file's format, delimiter and encoding (payload options format, delimiter, encoding)"
    # DuckDB's CSV reader says where ("CSV Error on Line: 31"); its JSON reader counts one line too many,
    # so a newline-delimited file's bad line is found here instead.
    found = _LINE.search(text) if fmt == "csv" else None
    line = int(found.group(1)) if found else _json_bad_line(location) if fmt == "json" else None
    if fmt == "json":
        first = re.sub(r" in (line|record/value) \d+", "", first)
    if line is None:
        return InvalidCommand(f"cannot read {label} as {fmt}: {first[:300]}; {fix}", dataset=label, format=fmt)
    where = "" if re.search(rf"\bline:?\s*{line}\b", first, re.IGNORECASE) else f" (line {line})"
    return InvalidCommand(
        f"cannot read {label} as {fmt}{where}: {first[:300]}; {fix}", dataset=label, format=fmt, line=line
    )


_LINE = re.compile(r"\bline:?\s*(\d+)", re.IGNORECASE)
_JSON_LINES_CHECKED = 1_000_000


def _json_bad_line(location: str) -> int | None:
    """The first line of a newline-delimited JSON file that is not JSON; None for other JSON (one document)."""
    import json

    path = Path(location)
    if not path.is_file():
        return None
    parsed = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if number > _JSON_LINES_CHECKED:
                return None
            if not text.strip():
                continue
            try:
                json.loads(text)
            except ValueError:
                return number if parsed else None  # a first line alone may be part of one pretty-printed document
            parsed += 1
    return None

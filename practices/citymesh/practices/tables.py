"""Reading aggregate tables (long format: dimension columns plus a count or value) and refusing
anything that looks person-level. Pure: takes text, returns rows or raises `TableError`."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from typing import Final

from .disclosure import Row, TableError, cell_key
from .indicators import DIMENSIONS, TOTAL, IndicatorDef

MAX_ROWS: Final = 4000
PERSON_LIKE: Final = re.compile(
    r"(^|_)(id|ids|name|names|first|last|surname|birth|dob|born|address|street|email|e_mail|"
    r"phone|mobile|passport|ssn|nin|bsn|nationalnumber|case|file|record|person|client|"
    r"beneficiary|postcode|zip|gps|lat|lon)($|_)",
    re.IGNORECASE,
)
MEASURE_COLUMNS: Final = ("count", "value", "base")


def _column(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name.strip()).strip("_")


def _aggregate_hint(defn: IndicatorDef) -> str:
    dims = ", ".join(defn.dimensions) or "no dimensions"
    what = "a count" if defn.measure == "count" else "a value and its base"
    return f"send one row per combination of {dims} with {what} (citymesh accepts aggregates only)"


def parse_csv(defn: IndicatorDef, text: str) -> list[Row]:
    """Rows of a CSV table for ``defn``. Raises `TableError` naming the row and column."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise TableError("the file is empty: expected a header row") from None
    except csv.Error as err:
        raise TableError(f"not a readable CSV file: {err}") from err
    columns = [_column(h) for h in header]
    by_name = {c.upper(): i for i, c in enumerate(columns)}
    _check_columns(defn, columns)
    rows: list[Row] = []
    try:
        for n, record in enumerate(reader, start=2):
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise TableError(f"has {len(record)} fields, the header has {len(header)}", row=n)
            if len(rows) >= MAX_ROWS:
                raise TableError(f"more than {MAX_ROWS} rows: split the table", row=n)
            dims = {d: record[by_name[d]].strip() for d in defn.dimensions}
            rows.append(
                Row(
                    dims=dims,
                    count=_int(record, by_name.get("COUNT"), n, "count"),
                    value=_float(record, by_name.get("VALUE"), n),
                    base=_int(record, by_name.get("BASE"), n, "base"),
                )
            )
    except csv.Error as err:
        raise TableError(f"not a readable CSV file: {err}", row=reader.line_num) from err
    return check_rows(defn, rows)


def _check_columns(defn: IndicatorDef, columns: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in columns:
        upper = name.upper()
        if not name:
            raise TableError("a column has no name")
        if upper in seen:
            raise TableError(f"column {name!r} appears twice", column=name)
        seen.add(upper)
        if upper in defn.dimensions or name.lower() in MEASURE_COLUMNS:
            continue
        if PERSON_LIKE.search(name):
            raise TableError(
                f"column {name!r} looks like personal data; remove it and " + _aggregate_hint(defn),
                column=name,
            )
        raise TableError(
            f"column {name!r} is not a dimension of {defn.code} "
            f"(its dimensions: {', '.join(defn.dimensions) or 'none'}); " + _aggregate_hint(defn),
            column=name,
        )
    for d in defn.dimensions:
        if d not in seen:
            raise TableError(f"column {d!r} is missing (a dimension of {defn.code})", column=d)
    measure = "COUNT" if defn.measure == "count" else "VALUE"
    if measure not in seen:
        raise TableError(f"column {measure.lower()!r} is missing", column=measure.lower())
    if defn.measure != "count" and "BASE" not in seen:
        raise TableError(
            "column 'base' is missing: each value needs the number of people or cases it is "
            "computed from (values based on fewer than the minimum are suppressed)",
            column="base",
        )


def _int(record: Sequence[str], index: int | None, row: int, column: str) -> int | None:
    if index is None or not record[index].strip():
        return None
    text = record[index].strip()
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise TableError(
            f"{column} {text[:20]!r} is not a whole number >= 0", row=row, column=column
        )
    return int(text)


def _float(record: Sequence[str], index: int | None, row: int) -> float | None:
    if index is None or not record[index].strip():
        return None
    try:
        value = float(record[index].strip())
    except ValueError:
        raise TableError(
            f"value {record[index][:20]!r} is not a number", row=row, column="value"
        ) from None
    if not math.isfinite(value) or abs(value) > 1e15:
        raise TableError("value must be a finite number", row=row, column="value")
    return value


def check_rows(defn: IndicatorDef, rows: Sequence[Row]) -> list[Row]:
    """Validate rows from any source (CSV or the HTTP API) against the definition."""
    if not rows:
        raise TableError("the table has no rows")
    if len(rows) > MAX_ROWS:
        raise TableError(f"more than {MAX_ROWS} rows: split the table")
    seen: dict[tuple[tuple[str, str], ...], int] = {}
    for n, row in enumerate(rows, start=1):
        extra = set(row.dims) - set(defn.dimensions)
        if extra:
            name = sorted(extra)[0]
            kind = (
                "looks like personal data"
                if PERSON_LIKE.search(name)
                else (f"is not a dimension of {defn.code}")
            )
            raise TableError(f"{name!r} {kind}; " + _aggregate_hint(defn), row=n, column=name)
        for d in defn.dimensions:
            code = row.dims.get(d)
            if code is None:
                raise TableError(f"no {d} code", row=n, column=d)
            allowed = DIMENSIONS[d].codes
            if code == TOTAL:
                if defn.measure == "count":
                    raise TableError(
                        f"{d} is a total ({TOTAL}): leave totals out, they are computed from "
                        "the unrounded cells",
                        row=n,
                        column=d,
                    )
            elif code not in allowed:
                raise TableError(
                    f"{d} code {code[:20]!r} is not in the code list ({', '.join(allowed)})",
                    row=n,
                    column=d,
                )
        if defn.measure == "count":
            if row.count is None:
                raise TableError("count is missing", row=n, column="count")
            if row.value is not None:
                raise TableError(
                    f"{defn.code} is a count: give 'count', not 'value'", row=n, column="value"
                )
        elif row.value is None and row.base is None:
            raise TableError("value and base are missing", row=n, column="value")
        key = cell_key(row.dims)
        if key in seen:
            raise TableError(
                f"repeats the combination of row {seen[key]}: this looks like one row per "
                "person; " + _aggregate_hint(defn),
                row=n,
            )
        seen[key] = n
    if defn.measure == "count" and len(rows) >= 5 and all(r.count == 1 for r in rows):
        raise TableError(
            "every row counts exactly one: this looks like person-level data; "
            + _aggregate_hint(defn)
        )
    return list(rows)

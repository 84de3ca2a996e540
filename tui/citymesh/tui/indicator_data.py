"""Published indicator tables reshaped for the screen: lines over periods for one city, and one
period across cities. Pure (no Textual, no I/O).

A *breakdown* says which cells of a table make the lines: ``total`` (every dimension at its
total ``_T``, or the one cell of a table without dimensions), ``by:DIM`` (one line per code of
``DIM``, the other dimensions at their total) or ``all`` (every combination of codes, no totals).

Suppressed cells have no value (`None`), and stay `None` here: the chart leaves a gap and the
tables say why. They are never turned into zeros.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from citymesh.protocol import api
from citymesh.protocol.records import Cell

TOTAL: Final = "_T"
"""The SDMX code of a margin (all codes of a dimension together)."""
UNIT_LABELS: Final = {
    "PS": "persons",
    "NR": "number",
    "PC": "%",
    "DAYS": "days",
    "EUR": "euro",
}


@dataclass(frozen=True)
class Breakdown:
    key: str
    label: str


@dataclass(frozen=True)
class Point:
    """One line's cell in one period: a value, or None with the reason in ``flag``."""

    period: str
    value: float | None
    flag: str = ""


@dataclass(frozen=True)
class Series:
    label: str
    points: list[Point]

    @property
    def published(self) -> list[Point]:
        return [p for p in self.points if p.value is not None]


@dataclass(frozen=True)
class CityValue:
    """One city's cell in the comparison of one period."""

    city: str
    country: str
    author: str
    line: str
    value: float | None
    flag: str
    unit: str
    own: bool = False
    unverified: bool = False


def cell_flag(cell: Cell, measure: str = "count") -> str:
    """What a reader must know about a cell: why it has no value, or how its value was made."""
    if cell.value is not None:
        return {"E": "estimated", "P": "provisional"}.get(cell.obs_status, "")
    if cell.conf_status == "C":
        return "suppressed · confidential" if measure == "count" else "suppressed · low base"
    if cell.conf_status == "D":
        return "suppressed · secondary"
    if cell.conf_status == "N":
        return "not for publication"
    return "missing"


def format_value(value: float | None, measure: str = "count") -> str:
    if value is None:
        return "—"
    if measure == "count" or value.is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def unit_text(unit: str) -> str:
    label = UNIT_LABELS.get(unit)
    return f"{unit} ({label})" if label and label != unit else unit


def _dimensions(tables: Iterable[api.IndicatorTable]) -> list[str]:
    dims: list[str] = []
    for table in tables:
        for d in table.table.dimensions:
            if d not in dims:
                dims.append(d)
    return dims


def in_breakdown(dims: dict[str, str], key: str) -> bool:
    if key == "total":
        return all(code == TOTAL for code in dims.values())
    if key == "all":
        return bool(dims) and all(code != TOTAL for code in dims.values())
    dim = key.removeprefix("by:")
    return dims.get(dim, TOTAL) != TOTAL and all(
        code == TOTAL for d, code in dims.items() if d != dim
    )


def breakdowns(tables: Sequence[api.IndicatorTable]) -> list[Breakdown]:
    """The breakdowns these tables have cells for, the total first."""
    cells = [c.dims for t in tables for c in t.table.cells]
    dims = _dimensions(tables)
    options = [Breakdown("total", "Total")]
    options += [Breakdown(f"by:{d}", f"By {d}") for d in dims]
    if len(dims) > 1:
        options.append(Breakdown("all", "All combinations"))
    return [b for b in options if any(in_breakdown(c, b.key) for c in cells)]


def line_label(dims: dict[str, str], definition: api.IndicatorDefinition | None = None) -> str:
    """``Female · Refugee`` (code labels of the catalogue where it has them), ``Total``."""
    labels: dict[str, dict[str, str]] = {}
    if definition is not None:
        labels = {d.id: dict(d.labels) for d in definition.dimensions}
    parts = [labels.get(d, {}).get(code, code) for d, code in dims.items() if code != TOTAL]
    return " · ".join(parts) or "Total"


def _order(dims: dict[str, str], definition: api.IndicatorDefinition | None) -> tuple[int, ...]:
    """Cells in the catalogue's code order (unknown codes last)."""
    if definition is None:
        return ()
    out: list[int] = []
    for dim in definition.dimensions:
        code = dims.get(dim.id, TOTAL)
        out.append(dim.codes.index(code) if code in dim.codes else len(dim.codes))
    return tuple(out)


def periods_of(tables: Iterable[api.IndicatorTable]) -> list[str]:
    return sorted({t.table.period for t in tables})


def series(
    tables: Sequence[api.IndicatorTable],
    breakdown: str,
    definition: api.IndicatorDefinition | None = None,
) -> tuple[list[str], list[Series]]:
    """One city's tables of one indicator → the periods and one line per cell of the
    breakdown; a period where a line's cell is absent or suppressed has a point without value."""
    periods = periods_of(tables)
    measure = definition.measure if definition else "count"
    by_line: dict[tuple[tuple[str, str], ...], dict[str, Point]] = {}
    keys: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for table in tables:
        for cell in table.table.cells:
            if not in_breakdown(cell.dims, breakdown):
                continue
            key = tuple(sorted(cell.dims.items()))
            keys.setdefault(key, cell.dims)
            by_line.setdefault(key, {})[table.table.period] = Point(
                table.table.period, cell.value, cell_flag(cell, measure)
            )
    ordered = sorted(keys, key=lambda k: (_order(keys[k], definition), k))
    lines = [
        Series(
            line_label(keys[k], definition),
            [by_line[k].get(p, Point(p, None, "not in this release")) for p in periods],
        )
        for k in ordered
    ]
    return periods, lines


def comparison(
    tables: Sequence[api.IndicatorTable],
    breakdown: str,
    definition: api.IndicatorDefinition | None = None,
    own: str | None = None,
) -> list[CityValue]:
    """Every city's cells of the breakdown in tables of one period, cities by name."""
    measure = definition.measure if definition else "count"
    out: list[CityValue] = []
    ordered = sorted(tables, key=lambda t: ((t.city or "").lower(), t.author))
    for table in ordered:
        cells = [c for c in table.table.cells if in_breakdown(c.dims, breakdown)]
        cells.sort(key=lambda c: (_order(c.dims, definition), sorted(c.dims.items())))
        for cell in cells:
            out.append(
                CityValue(
                    city=table.city or "?",
                    country=table.country or "",
                    author=table.author,
                    line=line_label(cell.dims, definition),
                    value=cell.value,
                    flag=cell_flag(cell, measure),
                    unit=table.table.unit,
                    own=table.author == own,
                    unverified=table.unverified,
                )
            )
    return out


def bar(value: float | None, top: float, width: int = 20) -> str:
    """A text bar for ``value`` out of ``top``; empty for a missing value (never a zero bar)."""
    if value is None or top <= 0 or value < 0:
        return ""
    eighths = round(value / top * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + ("" if rest == 0 else " ▏▎▍▌▋▊▉"[rest])

"""One indicator in one period across cities: value, a bar to compare by eye, unit and the
status flags (suppressed, confidential, low base); a suppressed cell has no bar, never a zero."""

from __future__ import annotations

from typing import Final

from rich.text import Text
from textual.widgets import DataTable

from ..indicator_data import CityValue, bar, format_value, unit_text

COLUMNS: Final = ("City", "Country", "Cell", "Value", "", "Unit", "Status")
"""Widths follow the content; the bars are `BAR_WIDTH` wide at most."""
BAR_WIDTH: Final = 12


class IndicatorComparison(DataTable[Text]):
    """Rows of `CityValue`; ``show`` replaces them."""

    DEFAULT_CSS = """
    IndicatorComparison { height: 1fr; }
    """

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for label in COLUMNS:
            self.add_column(label)

    def show(self, rows: list[CityValue], measure: str) -> None:
        self.clear()
        values = [r.value for r in rows if r.value is not None]
        top = max(values, default=0.0)
        for n, row in enumerate(rows):
            if row.value is None:
                value = Text("✕", "bold red")
                status = Text(row.flag or "suppressed", "bold red")
            else:
                value = Text(format_value(row.value, measure), justify="right")
                status = Text(row.flag, "yellow") if row.flag else Text("published", "dim")
            if row.unverified:
                status.append(" · unverified", "yellow")
            self.add_row(
                Text(row.city + (" (this node)" if row.own else ""), "bold" if row.own else ""),
                Text(row.country),
                Text(row.line),
                value,
                Text(bar(row.value, top, BAR_WIDTH), "cyan"),
                Text(unit_text(row.unit)),
                status,
                key=f"{n}:{row.author}:{row.line}",
            )

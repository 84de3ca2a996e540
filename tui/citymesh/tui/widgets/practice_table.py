"""The catalogue's table of practices (row key = practice ref).

Columns fit the width: from 88 cells on it shows title, city, country, sectors, rating,
replications and age; narrower, country and sectors go (the preview shows them).
"""

from __future__ import annotations

import datetime
from typing import ClassVar, Final

from textual import events
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.widgets import DataTable

from citymesh.protocol import api

from .. import labels
from ..formatting import age, rating_text

WIDE: Final = 88
PADDING: Final = 2
"""Cells between columns (DataTable's cell padding on both sides)."""
SCROLLBAR: Final = 1
"""Kept free for the vertical scrollbar (app.tcss makes it one cell wide)."""


def _cell(text: str, width: int, style: str = "") -> Content:
    return Content.styled(text, style).truncate(width, ellipsis=True)


class PracticeTable(DataTable[Content]):
    """One row per `api.PracticeItem`; ``enter`` opens the highlighted practice."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", key_display="⏎", tooltip="Open this practice"),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.items: dict[str, api.PracticeItem] = {}
        self.today = datetime.date(1970, 1, 1)
        self.widths: dict[str, int] = {}

    def _layout(self, width: int) -> dict[str, int]:
        """Column widths for a table ``width`` cells wide."""
        if width >= WIDE:
            fixed = {"city": 10, "country": 4, "rating": 7, "replications": 5, "updated": 5}
            free = width - sum(fixed.values()) - PADDING * 7 - SCROLLBAR
            return {"title": free * 3 // 5, **fixed, "sectors": free - free * 3 // 5}
        fixed = {"city": 9, "rating": 7, "replications": 5, "updated": 5}
        free = width - sum(fixed.values()) - PADDING * 5 - SCROLLBAR
        return {"title": max(12, free), **fixed}

    def on_resize(self, event: events.Resize) -> None:
        widths = self._layout(event.size.width)
        if widths != self.widths:
            self.widths = widths
            self._rebuild()

    def _rebuild(self) -> None:
        current = self.current_ref
        items = list(self.items.values())
        self.clear(columns=True)
        names = {
            "title": "Title",
            "city": "City",
            "country": "Ctry",
            "sectors": "Sectors",
            "rating": "Rating",
            "replications": "Repl.",
            "updated": "Age",
        }
        order = ("title", "city", "country", "sectors", "rating", "replications", "updated")
        for key in order:
            if key in self.widths:
                self.add_column(names[key], key=key, width=self.widths[key])
        self.items = {}
        self.add_items(items, self.today)
        self._restore(current)

    def _restore(self, ref: str | None) -> None:
        if ref is not None and ref in self.items:
            self.move_cursor(row=self.get_row_index(ref), animate=False)

    def show_items(self, items: list[api.PracticeItem], today: datetime.date) -> None:
        """Replace the rows, keeping the cursor on the same practice when it is still there."""
        current = self.current_ref
        self.clear()
        self.items = {}
        self.add_items(items, today)
        self._restore(current)

    def add_items(self, items: list[api.PracticeItem], today: datetime.date) -> None:
        self.today = today
        if not self.widths:  # before the first resize: remember them for then
            self.items.update((i.ref, i) for i in items)
            return
        for item in items:
            if item.ref in self.items:
                continue
            self.items[item.ref] = item
            cells = {
                "title": (item.title, "italic" if item.unverified else ""),
                "city": (item.city or "?", ""),
                "country": (item.country or "", ""),
                "sectors": (", ".join(labels.sector(s) for s in item.sectors), ""),
                "rating": (rating_text(item.rating), ""),
                "replications": (str(item.replications) if item.replications else "–", ""),
                "updated": (age(item.updated, today), ""),
            }
            self.add_row(
                *(
                    _cell(text, self.widths[key], style)
                    for key, (text, style) in cells.items()
                    if key in self.widths
                ),
                key=item.ref,
            )

    def action_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last(self) -> None:
        """To the last row (which loads the next page, if there is one)."""
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    @property
    def current_ref(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except LookupError:
            return None
        return key.value

    @property
    def current_item(self) -> api.PracticeItem | None:
        ref = self.current_ref
        return self.items.get(ref) if ref else None

"""The catalogue: search box, facet filters with counts, the table of practices, a preview."""

from __future__ import annotations

from typing import ClassVar, Final

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static

from citymesh.protocol import api

from ..widgets.facets import FacetCounts, FacetList
from ..widgets.node_banner import NodeBanner
from ..widgets.practice_table import PracticeTable
from ..widgets.preview import PracticePreview
from .base import BaseScreen
from .rate import RateDialog
from .replicate import ReplicateDialog

PAGE_SIZE: Final = 100
TYPING_PAUSE: Final = 0.12
"""Seconds of no typing before the search runs (each keystroke cancels the previous search)."""


class CatalogueScreen(BaseScreen[None]):
    """Find practices: type to search, pick facets, read the preview, open one."""

    AUTO_FOCUS = "#practices"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "rate", "Rate", id="rate", tooltip="Rate the highlighted practice"),
        Binding(
            "p",
            "replicate",
            "Replicate",
            id="replicate",
            tooltip="Start or update your city's replication of it",
        ),
        Binding("escape", "leave_search", "Results", id="back", tooltip="Back to the results"),
        Binding("f", "focus_facets", "Filters", show=False, id="filters"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.result: api.PracticeList | None = None
        self.query_sent: api.PracticeQuery | None = None
        self._typing: Timer | None = None
        self._move_to_first = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="search-row"):
            yield Input(
                placeholder="Search practices: words, city, place…  (press / to come here)",
                id="search",
            )
            yield Static("", id="result-count")
        with Horizontal(id="catalogue"):
            yield FacetList(id="facets")
            with Vertical(id="results"):
                yield PracticeTable(id="practices")
                yield PracticePreview(id="preview")
        yield NodeBanner()
        yield Footer()

    # -- queries -------------------------------------------------------------------------------
    @property
    def search_text(self) -> str:
        return self.query_one("#search", Input).value

    def build_query(self, cursor: str | None = None) -> api.PracticeQuery:
        selected = self.query_one(FacetList).selected
        text = self.search_text.strip()[:200]
        rating = selected.get("rating")
        return api.PracticeQuery(
            q=text or None,
            sector=selected.get("sector"),  # type: ignore[arg-type]
            target_group=selected.get("target_group"),  # type: ignore[arg-type]
            country=selected.get("country"),
            status=selected.get("status"),  # type: ignore[arg-type]
            min_rating=float(rating) if rating else None,
            sort="relevance" if text else "updated",
            limit=PAGE_SIZE,
            cursor=cursor,
        )

    def reload(self) -> None:
        self.run_search()

    @work(exclusive=True, group="search")
    async def run_search(self) -> None:
        query = self.build_query()
        if query != self.query_sent:  # a new question (a live refresh keeps the count shown)
            self.query_one("#result-count", Static).update("searching…")
        with self.cm.reporting():
            result = await self.cm.client.practices(query)
            self.show_result(query, result)
            self.mark_loaded()

    @work(exclusive=True, group="more")
    async def load_more(self) -> None:
        if self.result is None or self.result.next is None or self.query_sent is None:
            return
        query = self.build_query(cursor=self.result.next)
        with self.cm.reporting():
            page = await self.cm.client.practices(query)
            if query.cursor != (self.result.next if self.result else None):
                return  # a new search replaced the results meanwhile
            self.result = api.PracticeList(
                items=[*self.result.items, *page.items], next=page.next, facets=page.facets
            )
            self.query_one(PracticeTable).add_items(page.items, self.cm.today)
            self._show_counts()

    def show_result(self, query: api.PracticeQuery, result: api.PracticeList) -> None:
        self.query_sent = query
        self.result = result
        table = self.query_one(PracticeTable)
        table.show_items(result.items, self.cm.today)
        if self._move_to_first and table.row_count:
            table.move_cursor(row=0, animate=False)
        self._move_to_first = False
        self._show_counts()
        self._show_preview()

    def _show_counts(self) -> None:
        result = self.result
        if result is None:
            return
        counts: dict[str, dict[str, int]] = {k: dict(v) for k, v in result.facets.items()}
        rated = [i.rating.bayes for i in result.items if i.rating.bayes is not None]
        counts["rating"] = {
            step: sum(1 for b in rated if b >= float(step)) for step in ("4", "3", "2")
        }
        partial = frozenset({"rating"}) if result.next else frozenset()
        self.query_one(FacetList).show_counts(FacetCounts(counts, partial))
        shown = len(result.items)
        by_status = result.facets.get("status", {})
        chosen = self.query_sent.status if self.query_sent else None
        total = by_status.get(chosen, 0) if chosen else sum(by_status.values())
        total = max(total, shown)
        noun = "practice" if total == 1 else "practices"
        text = f"{total} {noun}" if total == shown else f"{shown} of {total} {noun}"
        self.query_one("#result-count", Static).update(text)

    def _show_preview(self) -> None:
        table = self.query_one(PracticeTable)
        self.query_one(PracticePreview).show_item(table.current_item, self.cm.today)
        self.refresh_bindings()  # r and p depend on the highlighted practice

    # -- events --------------------------------------------------------------------------------
    @on(Input.Changed, "#search")
    def _typed(self) -> None:
        if self._typing is not None:
            self._typing.stop()
        self._typing = self.set_timer(TYPING_PAUSE, self.run_search)

    @on(Input.Submitted, "#search")
    def _search_entered(self) -> None:
        """Enter in the search box: to the first result."""
        if self._typing is not None:
            self._typing.stop()
            self._typing = None
        self._move_to_first = True
        table = self.query_one(PracticeTable)
        table.focus()
        if self.query_sent is not None and self.query_sent == self.build_query():
            if table.row_count:
                table.move_cursor(row=0, animate=False)
            self._move_to_first = False
        else:
            self.run_search()

    @on(FacetList.Changed)
    def _filters_changed(self) -> None:
        self.run_search()

    @on(DataTable.RowHighlighted, "#practices")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_preview()
        table = self.query_one(PracticeTable)
        if event.cursor_row >= table.row_count - 1 and self.result and self.result.next:
            self.load_more()

    @on(DataTable.RowSelected, "#practices")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.open_practice(event.row_key.value)

    def open_practice(self, ref: str) -> None:
        self.cm.open_practice(ref)

    # -- actions -------------------------------------------------------------------------------
    def focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_leave_search(self) -> None:
        self.query_one(PracticeTable).focus()

    def action_focus_facets(self) -> None:
        self.query_one(FacetList).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_search":
            return self.query_one("#search", Input).has_focus
        if action in ("rate", "replicate"):
            item = self.query_one(PracticeTable).current_item
            if item is None:
                return None
            own = self.cm.own_identity
            return None if own is not None and item.ref.startswith(own + "/") else True
        return True

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()

    def action_rate(self) -> None:
        ref = self.query_one(PracticeTable).current_ref
        if ref:
            self.open_dialog(ref, "rate")

    def action_replicate(self) -> None:
        ref = self.query_one(PracticeTable).current_ref
        if ref:
            self.open_dialog(ref, "replicate")

    @work(exclusive=True, group="dialog")
    async def open_dialog(self, ref: str, which: str) -> None:
        """Fetch the practice (for this city's current rating/replication), then ask."""
        with self.cm.reporting():
            detail = await self.cm.client.practice(ref)
            if which == "rate":
                self.app.push_screen(RateDialog(detail), self._after_publish)
            else:
                self.app.push_screen(ReplicateDialog(detail), self._after_publish)

    def _after_publish(self, published: api.Published | None) -> None:
        if published is not None:
            self.reload()

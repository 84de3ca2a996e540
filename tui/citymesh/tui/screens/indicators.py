"""Indicators: a city's published aggregate tables over time as a chart, and one indicator in
one period compared across cities.

Questions to the node: the catalogue (once); the chosen city's tables of the chosen indicator
(every period, for the chart); every city's tables of that indicator (for the list of periods
and of cells); and every city's table of that indicator in the chosen period (for the
comparison, asked for on its own so that it is complete however many tables the indicator has).
Pages are followed (`NodeClient.all_indicators`).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Final

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Footer, Header, Label, Select, Static, TabbedContent, TabPane

from citymesh.protocol import api

from ..indicator_data import breakdowns, comparison, periods_of, series, unit_text
from ..messages import RecordsChanged
from ..widgets.indicator_chart import IndicatorChart
from ..widgets.indicator_compare import IndicatorComparison
from ..widgets.node_banner import NodeBanner
from .base import BaseScreen

PAGE_SIZE: Final = 200
CONTROLS: Final = (
    ("City", "ind-city"),
    ("Indicator", "ind-code"),
    ("Cells", "ind-breakdown"),
    ("Period", "ind-period"),
)


class IndicatorsScreen(BaseScreen[None]):
    """Pick a city, an indicator, the cells to draw and (to compare) a period."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back", tooltip="Back to the catalogue"),
        Binding("o", "over_time", "Over time", id="over_time", tooltip="The city over time"),
        Binding(
            "a",
            "across_cities",
            "Across cities",
            id="across_cities",
            tooltip="One period, every city",
        ),
    ]

    def __init__(self, code: str | None = None) -> None:
        super().__init__()
        self.definitions: dict[str, api.IndicatorDefinition] = {}
        self.cities: dict[str, str] = {}
        """Identity → name, for the city picker."""
        self.city: str | None = None
        self.code: str | None = code
        self.breakdown = "total"
        self.period: str | None = None
        self.city_tables: list[api.IndicatorTable] = []
        self.all_tables: list[api.IndicatorTable] = []
        self.period_tables: list[api.IndicatorTable] = []
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="indicator-controls"):
            for label, select_id in CONTROLS:
                yield Label(label, classes="control-label")
                yield Select[str]([], prompt="…", id=select_id, compact=True)
        yield Static("", id="ind-about")
        with TabbedContent(id="ind-tabs", initial="over-time"):
            with TabPane("Over time", id="over-time"):
                yield IndicatorChart(id="ind-chart")
            with TabPane("Across cities", id="across"), Vertical():
                yield Static("", id="ind-compare-title")
                yield IndicatorComparison(id="ind-compare")
        yield NodeBanner()
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Indicators"
        self.reload()

    def reload(self) -> None:
        self.load()

    def concerns(self, message: RecordsChanged) -> bool:
        return bool(message.kinds() & {"indicators", "city", "retraction"})

    # -- loading -------------------------------------------------------------------------------
    @work(exclusive=True, group="load")
    async def load(self) -> None:
        client = self.cm.client
        with self.cm.reporting():
            if not self.definitions:
                definitions, cities, status = await asyncio.gather(
                    client.indicator_definitions(), client.cities(), client.status()
                )
                self.definitions = {d.code: d for d in definitions}
                self.city = self.city or status.identity
                if self.code is None:
                    self.code = await self._default_code(status.identity)
            else:
                cities = await client.cities()
            self.cities = {c.identity: c.name or c.fingerprint for c in cities.items}
            await self._load_tables()

    async def _default_code(self, own: str) -> str | None:
        """The indicator this city published last, else the catalogue's first."""
        mine = await self.cm.client.indicators(api.IndicatorQuery(city=own, limit=PAGE_SIZE))
        if mine.items:
            return max(mine.items, key=lambda t: t.updated).table.code
        return next(iter(self.definitions), None)

    @work(exclusive=True, group="load")
    async def load_tables(self) -> None:
        with self.cm.reporting():
            await self._load_tables()

    async def _load_tables(self) -> None:
        if self.code is None or self.city is None:
            self._show_no_catalogue()
            return
        client = self.cm.client
        mine, everyone = await asyncio.gather(
            client.all_indicators(
                api.IndicatorQuery(city=self.city, code=self.code, limit=PAGE_SIZE)
            ),
            client.all_indicators(api.IndicatorQuery(code=self.code, limit=PAGE_SIZE)),
        )
        self.city_tables, self.all_tables = mine.items, everyone.items
        for table in everyone.items:
            self.cities.setdefault(table.author, table.city or table.author[:12])
        if self.period not in self.periods:
            latest = periods_of(self.city_tables) or self.periods
            self.period = latest[-1] if latest else None
        self.period_tables = await self._fetch_period()
        options = [b.key for b in breakdowns(self.all_tables)]
        if self.breakdown not in options:
            self.breakdown = options[0] if options else "total"
        self.loaded = True
        self.mark_loaded()
        self.show()

    async def _fetch_period(self) -> list[api.IndicatorTable]:
        if self.code is None or self.period is None:
            return []
        query = api.IndicatorQuery(code=self.code, period=self.period, limit=PAGE_SIZE)
        return (await self.cm.client.all_indicators(query)).items

    @work(exclusive=True, group="period")
    async def load_period(self) -> None:
        with self.cm.reporting():
            self.period_tables = await self._fetch_period()
            self.show_comparison()

    # -- showing -------------------------------------------------------------------------------
    @property
    def periods(self) -> list[str]:
        return periods_of([*self.all_tables, *self.city_tables])

    @property
    def definition(self) -> api.IndicatorDefinition | None:
        return self.definitions.get(self.code) if self.code else None

    @property
    def measure(self) -> str:
        definition = self.definition
        return definition.measure if definition else "count"

    def _show_no_catalogue(self) -> None:
        self.query_one("#ind-about", Static).update(Content("The node has no indicator catalogue."))

    def show(self) -> None:
        if not self.query("#ind-city"):
            return  # an answer that came back while the screen was being closed
        self._sync_selects()
        self._show_about()
        self.show_chart()
        self.show_comparison()

    def _sync_selects(self) -> None:
        city_select = self.query_one("#ind-city", Select)
        by_name = sorted(self.cities.items(), key=lambda kv: (kv[1].lower(), kv[0]))
        city_select.set_options((name, identity) for identity, name in by_name)
        if self.city in self.cities:
            city_select.value = self.city
        code_select = self.query_one("#ind-code", Select)
        code_select.set_options((f"{d.code} · {d.name}", d.code) for d in self.definitions.values())
        if self.code in self.definitions:
            code_select.value = self.code
        cells = self.query_one("#ind-breakdown", Select)
        cells.set_options((b.label, b.key) for b in breakdowns(self.all_tables))
        if any(b.key == self.breakdown for b in breakdowns(self.all_tables)):
            cells.value = self.breakdown
        period_select = self.query_one("#ind-period", Select)
        period_select.set_options((p, p) for p in reversed(self.periods))
        if self.period is not None:
            period_select.value = self.period

    def _show_about(self) -> None:
        definition = self.definition
        about = self.query_one("#ind-about", Static)
        if definition is None:
            about.update(Content(f"{self.code}: not in this node's catalogue"))
            return
        unit = unit_text(definition.unit)
        about.update(
            Content.assemble(
                (definition.name, "bold"),
                f" ({definition.code}, {definition.measure}, {unit})",
                (f" · {definition.description}" if definition.description else "", "dim"),
            )
        )

    def show_chart(self) -> None:
        chart = self.query_one(IndicatorChart)
        city = self.cities.get(self.city or "", "this city")
        if not self.city_tables:
            chart.show_empty(
                f"No tables published yet for this indicator by {city}."
                + (
                    " Other cities have: see Across cities (a)."
                    if self.all_tables
                    else " Import one with `citymesh indicators import`."
                )
            )
            return
        periods, lines = series(self.city_tables, self.breakdown, self.definition)
        unit = self.city_tables[-1].table.unit
        chart.show_series(f"{city} · {self.code}", unit, periods, lines, self.measure)

    def show_comparison(self) -> None:
        title = self.query_one("#ind-compare-title", Static)
        table = self.query_one(IndicatorComparison)
        if not self.query(IndicatorComparison):
            return
        tables = [t for t in self.period_tables if t.table.period == self.period]
        if not tables:
            title.update("No tables published yet for this indicator.")
            table.show([], self.measure)
            return
        n = len({t.author for t in tables})
        title.update(
            f"{self.code} in {self.period}: {n} {'city' if n == 1 else 'cities'}"
            " · ✕ = suppressed by disclosure control (not zero)"
        )
        rows = comparison(tables, self.breakdown, self.definition, own=self.cm.own_identity)
        table.show(rows, self.measure)

    # -- choices -------------------------------------------------------------------------------
    @on(Select.Changed, "#ind-city")
    def _city(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.city:
            self.city = event.value
            self.load_tables()

    @on(Select.Changed, "#ind-code")
    def _code(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.code:
            self.code = event.value
            self.load_tables()

    @on(Select.Changed, "#ind-breakdown")
    def _breakdown(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.breakdown:
            self.breakdown = event.value
            self.show_chart()
            self.show_comparison()

    @on(Select.Changed, "#ind-period")
    def _period(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.period:
            self.period = event.value
            self.load_period()

    def choose(
        self,
        *,
        city: str | None = None,
        code: str | None = None,
        breakdown: str | None = None,
        period: str | None = None,
    ) -> None:
        """Pick what to show (as the selects do), then load it."""
        self.city = city or self.city
        self.code = code or self.code
        self.breakdown = breakdown or self.breakdown
        self.period = period or self.period
        self.load_tables()

    # -- actions -------------------------------------------------------------------------------
    def action_over_time(self) -> None:
        self.query_one("#ind-tabs", TabbedContent).active = "over-time"

    def action_across_cities(self) -> None:
        self.query_one("#ind-tabs", TabbedContent).active = "across"

    def action_back(self) -> None:
        self.app.pop_screen()

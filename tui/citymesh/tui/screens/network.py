"""The network as this node sees it: this city, relays (connection, lag, outbox), member
cities, records held, and records rejected by reason."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Final

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import DataTable, Footer, Header, Label, Static

from citymesh.protocol import api

from ..formatting import when
from ..messages import RecordsChanged
from ..widgets.node_banner import NodeBanner
from .base import BaseScreen

COLUMNS: Final = {
    "relays": (
        ("Relay", 28),
        ("State", 11),
        ("Lag", 5),
        ("Cursor", 7),
        ("Outbox", 6),
        ("Last error", 30),
    ),
    "cities": (
        ("City", 16),
        ("Country", 7),
        ("Fingerprint", 11),
        ("Practices", 9),
        ("Member of", 14),
        ("Updated", 10),
        ("State", 12),
    ),
    "records": (("Kind", 12), ("Count", 8)),
    "rejected": (("Reason", 24), ("Count", 8)),
}
"""Column labels and widths (fixed: a table refilled every few seconds must not jump)."""
REFRESH_SECONDS: Final = 2.0
"""Lag changes without any record reaching this node: look again this often."""


class NetworkScreen(BaseScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back", tooltip="Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.status: api.Status | None = None
        self.cities: api.CityList | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="network"):
            yield Static("", id="me")
            yield Label("Relays", classes="section-title")
            yield DataTable[Text](id="relays", cursor_type="row", show_cursor=False)
            yield Label("Cities", classes="section-title")
            yield DataTable[Text](id="cities", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="counts"):
                with Vertical():
                    yield Label("Records held", classes="section-title")
                    yield DataTable[Text](id="records", show_cursor=False)
                with Vertical():
                    yield Label("Rejected records", classes="section-title")
                    yield DataTable[Text](id="rejected", show_cursor=False)
        yield NodeBanner()
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Network"
        for table_id, columns in COLUMNS.items():
            table = self.query_one(f"#{table_id}", DataTable)
            for label, width in columns:
                table.add_column(label, width=width)
        self.set_interval(REFRESH_SECONDS, self._tick)

    def _tick(self) -> None:
        if self.is_current and self.cm.node_state.online:
            self.load()

    def reload(self) -> None:
        self.load()

    def concerns(self, message: RecordsChanged) -> bool:
        return True

    @work(exclusive=True, group="load")
    async def load(self) -> None:
        with self.cm.reporting():
            status, cities = await asyncio.gather(self.cm.client.status(), self.cm.client.cities())
            self.show(status, cities)
            self.mark_loaded()

    def show(self, status: api.Status, cities: api.CityList) -> None:
        self.status, self.cities = status, cities
        ready = (
            Content.styled("ready to publish", "$success")
            if status.ready_to_publish
            else Content.styled(f"not ready: {status.not_ready_reason or 'waiting'}", "$warning")
        )
        self.query_one("#me", Static).update(
            Content.assemble(
                (status.city, "bold"),
                f" ({status.country or '?'})  identity {status.fingerprint}"
                f"  key {status.key_fingerprint}  seq {status.seq}  ·  ",
                ready,
                f"\nnetworks: {', '.join(status.networks)}",
            )
        )
        relays = self.query_one("#relays", DataTable)
        relays.clear()
        for relay in status.relays:
            relays.add_row(
                Text(relay.url),
                Text("● connected", "green") if relay.connected else Text("○ down", "red"),
                Text(str(relay.lag)),
                Text(str(relay.cursor)),
                Text(str(relay.outbox_pending)),
                Text(relay.last_error or "", "red"),
            )
        table = self.query_one("#cities", DataTable)
        table.clear()
        today = self.cm.today
        for city in sorted(cities.items, key=lambda c: (not c.own, (c.name or "").lower())):
            flags = []
            if city.own:
                flags.append("this node")
            if city.unverified:
                flags.append("unverified")
            if city.revoked:
                flags.append("revoked")
            member = ", ".join(
                f"{m.network}{'' if m.status == 'active' else ' (revoked)'}"
                for m in city.memberships
            ) or ", ".join(city.networks)
            table.add_row(
                Text(city.name or "?", "bold" if city.own else ""),
                Text(city.country or ""),
                Text(city.fingerprint),
                Text(str(city.practices)),
                Text(member),
                Text(when(city.updated, today)),
                Text(", ".join(flags), "yellow" if city.unverified or city.revoked else "dim"),
                key=city.identity,
            )
        records = self.query_one("#records", DataTable)
        records.clear()
        for kind, n in sorted(status.records.items()):
            records.add_row(Text(kind), Text(str(n)))
        if status.unverified:
            records.add_row(Text("unverified", "yellow"), Text(str(status.unverified)))
        rejected = self.query_one("#rejected", DataTable)
        rejected.clear()
        if not status.rejected:
            rejected.add_row(Text("none", "dim"), Text(""))
        for reason, n in sorted(status.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
            rejected.add_row(Text(reason), Text(str(n)))

    def action_back(self) -> None:
        self.app.pop_screen()

"""The citymesh coordinators' app: one node connection, live events, screens on top.

`create_app` is the one factory, used by the CLI and the tests. All network I/O runs in
workers; errors of node calls go through one handler (`CitymeshApp.reporting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Iterator
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.timer import Timer

from citymesh.protocol import api

from .client import (
    ApiError,
    ClientError,
    HomeError,
    NodeClient,
    NodeLocation,
    NodeUnavailable,
)
from .commands import CitymeshCommands
from .messages import NodeStateChanged, RecordsChanged
from .screens.catalogue import CatalogueScreen
from .screens.compose import ComposeScreen
from .screens.help import HelpScreen
from .screens.indicators import IndicatorsScreen
from .screens.network import NetworkScreen
from .screens.practice import PracticeScreen
from .state import NodeState

REFRESH_KINDS = frozenset(
    {
        "practice",
        "rating",
        "replication",
        "retraction",
        "city",
        "membership",
        "network",
        "indicators",
    }
)
"""Record kinds that change what the screens show (heads do not)."""
GLOBAL_ACTIONS = frozenset({"search", "network", "indicators", "new_practice", "help", "quit"})


class CitymeshApp(App[None]):
    """Browse, rate and replicate practices through one city node's HTTP API."""

    CSS_PATH = "app.tcss"
    TITLE = "citymesh"
    COMMANDS = App.COMMANDS | {CitymeshCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search", key_display="/", id="search", tooltip="Search"),
        Binding(
            "n",
            "new_practice",
            "New",
            id="new_practice",
            tooltip="Write a new practice of your city",
        ),
        Binding("c", "network", "Network", id="network", tooltip="Cities, relays, lag"),
        Binding(
            "i",
            "indicators",
            "Indicators",
            id="indicators",
            tooltip="Indicators over time and across cities",
        ),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave citymesh"),
    ]

    node_state: reactive[NodeState] = reactive(NodeState("connecting", ""), init=False)
    data_version: reactive[int] = reactive(0, init=False)
    """Bumped whenever what the node holds may have changed (new records, reconnection)."""

    def __init__(
        self,
        location: NodeLocation,
        *,
        retry: tuple[float, float] = (0.2, 2.0),
        batch_delay: float = 0.3,
    ) -> None:
        super().__init__()
        self.location = location
        self.client = NodeClient(location)
        self.status: api.Status | None = None
        self.retry = retry
        self.batch_delay = batch_delay
        self.events_seen = 0
        self.batches_sent = 0
        self._live_pending: list[api.Event] = []
        self._live_timer: Timer | None = None
        self.set_reactive(CitymeshApp.node_state, NodeState("connecting", location.url))

    # -- lifecycle ---------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.push_screen(CatalogueScreen())
        self.follow_events()

    async def on_unmount(self) -> None:
        await self.client.close()

    @property
    def own_identity(self) -> str | None:
        return self.status.identity if self.status else None

    @property
    def today(self) -> datetime.date:
        return datetime.datetime.now(datetime.UTC).date()

    # -- the node connection -----------------------------------------------------------------
    @work(exclusive=True, group="events", name="node events")
    async def follow_events(self) -> None:
        """Hold the SSE stream open; reconnect with backoff whenever it breaks."""
        delay = self.retry[0]
        while True:
            try:
                async with self.client.events() as events:
                    self.status = await self.client.status()
                    self._set_state(NodeState("online", self.location.url, city=self.status.city))
                    delay = self.retry[0]
                    async for event in events:
                        self._queue(event)
            except NodeUnavailable as err:
                self._set_state(NodeState("offline", self.location.url, err.cause))
            except ApiError as err:
                self._set_state(
                    NodeState("offline", self.location.url, f"{err.code}: {err}", refused=True)
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry[1])
            self._relocate()

    def _relocate(self) -> None:
        """Look in the node home again: a node restarted with ``--listen`` elsewhere (it
        writes ``api.url``) or a new API token is found without restarting the TUI."""
        if self.location.home is None:
            return
        try:
            location = NodeLocation.from_home(self.location.home)
        except HomeError:
            return  # keep trying where it was; the banner already says it is unreachable
        if location != self.location:
            self.location = location
            self.client.relocate(location)

    def _set_state(self, state: NodeState) -> None:
        was_online = self.node_state.online
        self.node_state = state
        if state.online:
            self.title = f"citymesh · {state.city}"
            if self.status and self.status.country:
                self.title += f" ({self.status.country})"
            self.sub_title = ""
            self.data_version += 1
            self.screen.post_message(NodeStateChanged(online=True))
        else:
            self.sub_title = "node unreachable" if state.connection == "offline" else ""
            if was_online:
                self.screen.post_message(NodeStateChanged(online=False, reason=state.reason))

    def node_lost(self, reason: str) -> None:
        """A request found the node gone: say so, and reconnect the event stream."""
        if self.node_state.connection != "offline":
            self._set_state(NodeState("offline", self.location.url, reason))
            self.follow_events()

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """The one handler of node call errors in workers: an unreachable node shows in the
        banner (and is retried), a refusal as a notification."""
        try:
            yield
        except NodeUnavailable as err:
            self.node_lost(err.cause)
        except ApiError as err:
            self.notify(
                str(err), title=f"The node refused: {err.code}", severity="error", markup=False
            )
        except ClientError as err:
            self.notify(str(err), severity="error", markup=False)

    # -- live events -------------------------------------------------------------------------
    def _queue(self, event: api.Event) -> None:
        self.events_seen += 1
        if event.kind not in REFRESH_KINDS:
            return
        self._live_pending.append(event)
        if self._live_timer is None:
            self._live_timer = self.set_timer(self.batch_delay, self._flush_events)

    def _flush_events(self) -> None:
        """At most one refresh per ``batch_delay``, however fast records arrive."""
        self._live_timer = None
        events, self._live_pending = self._live_pending, []
        if events:
            self.batches_sent += 1
            self.data_version += 1
            self.screen.post_message(RecordsChanged(events))

    # -- actions -----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Dialogs keep their keys: "q" typed in a comment must not quit.
        return not (action in GLOBAL_ACTIONS and isinstance(self.screen, ModalScreen))

    def catalogue(self) -> CatalogueScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, CatalogueScreen):
                return screen
        return None

    def open_practice(self, ref: str) -> None:
        self.push_screen(PracticeScreen(ref))

    def back_to_catalogue(self) -> CatalogueScreen | None:
        catalogue = self.catalogue()
        if catalogue is not None:
            while self.screen is not catalogue:
                self.pop_screen()
        return catalogue

    async def action_search(self) -> None:
        """Back to the catalogue, cursor in the search box."""
        catalogue = self.back_to_catalogue()
        if catalogue is not None:
            catalogue.focus_search()

    def action_network(self) -> None:
        if not isinstance(self.screen, NetworkScreen):
            self.push_screen(NetworkScreen())

    def action_indicators(self) -> None:
        if not isinstance(self.screen, IndicatorsScreen):
            self.push_screen(IndicatorsScreen())

    def action_new_practice(self) -> None:
        if not isinstance(self.screen, ComposeScreen):
            self.push_screen(ComposeScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def create_app(
    location: NodeLocation, *, retry: tuple[float, float] = (0.2, 2.0), batch_delay: float = 0.3
) -> CitymeshApp:
    """The app for the node at ``location``.

    ``retry``: first and longest wait between reconnection attempts (seconds);
    ``batch_delay``: how long live records are gathered before the screen refreshes.
    """
    return CitymeshApp(location, retry=retry, batch_delay=batch_delay)

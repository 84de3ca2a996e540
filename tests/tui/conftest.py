"""TUI fixtures: real city nodes (HTTP API in-process on 127.0.0.1, a real nats-server relay,
real SQLite) and the app driven by Textual's Pilot. Nothing about the node is mocked."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from textual.pilot import Pilot

from citymesh.node.app import create_app as create_node_app
from citymesh.node.config import CityConfig, Home, NodeConfig
from citymesh.node.daemon import Node
from citymesh.node.keys import NODE
from citymesh.node.natsserver import NatsServer
from citymesh.node.setup import init_home
from citymesh.protocol import api
from citymesh.protocol.identity import identity_text
from citymesh.tui.app import CitymeshApp, create_app
from citymesh.tui.client import ApiError, NodeClient, NodeLocation


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class City:
    """One city's node with its HTTP API, which can be stopped and started again on its port."""

    home: Home
    relays: list[str]
    runner: web.AppRunner | None = None
    app: web.Application | None = None
    clients: list[NodeClient] = field(default_factory=list)

    @property
    def location(self) -> NodeLocation:
        return NodeLocation.from_home(self.home.root)

    @property
    def node(self) -> Node:
        assert self.app is not None
        return self.app[NODE]

    @property
    def identity(self) -> str:
        return identity_text(self.home.identity())

    @property
    def name(self) -> str:
        return self.home.load_config().city.name

    async def start(self, *, port: int | None = None) -> None:
        """Start node and API on the configured address, or (like ``node run --listen``) on
        ``port``, saying so in ``<home>/api.url``."""
        config = self.home.load_config()
        self.app = create_node_app(self.home, config, relays=self.relays)
        # A short shutdown grace: a TUI keeps the event stream open, and the node is meant to
        # go away abruptly in these tests.
        self.runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2
        )
        await self.runner.setup()
        host, _, configured = config.listen.rpartition(":")
        await web.TCPSite(self.runner, host, port or int(configured)).start()
        if port is not None:
            self.home.url_path.write_text(f"http://{host}:{port}\n", encoding="utf-8")
        await self.node.wait_ready()
        await self.settle(head=True)

    async def settle(self, *, head: bool = False) -> None:
        """Wait until the node sent all it signed (and, with ``head``, has published its
        start-up head checkpoint, so record counts no longer move by themselves)."""
        client = NodeClient(self.location)
        try:

            async def settled() -> bool:
                status = await client.status()
                started = status.records.get("head", 0) >= 1 or not head
                return started and not any(r.outbox_pending for r in status.relays)

            await wait_for(settled, timeout=20)
        finally:
            await client.close()

    async def stop(self) -> None:
        if self.runner is not None:
            self.home.url_path.unlink(missing_ok=True)
            await self.runner.cleanup()
        self.runner = None
        self.app = None

    def client(self) -> NodeClient:
        client = NodeClient(self.location)
        self.clients.append(client)
        return client

    async def publish(self, addr: str, **fields: Any) -> str:
        """Publish a practice through the API; returns its ref."""
        data: dict[str, Any] = {
            "addr": addr,
            "title": {"en": fields.pop("title", addr.replace("-", " ").capitalize())},
            "summary": {"en": fields.pop("summary", f"Summary of {addr}.")},
            "status": "active",
            "sectors": ["HOUSING"],
            "contact": {"role_mailbox": f"{addr}@city.example.org"},
            **fields,
        }
        published = await self.client().publish_practice(msgspec.convert(data, api.PracticeIn))
        return published.ref

    async def has(self, ref: str, check: Callable[[api.PracticeDetail], bool] = bool) -> bool:
        try:
            detail = await self.client().practice(ref)
        except ApiError:
            return False
        return check(detail)


MakeCity = Callable[..., Awaitable[City]]


@pytest.fixture
async def make_city(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[MakeCity]:
    """``await make_city("Mechelen", "BEL")``: a new home (real ``init``) and its running node,
    connected to the test's relay; all stopped at teardown."""
    numbers = itertools.count(1)
    cities: list[City] = []

    async def make(name: str, country: str, *, start: bool = True) -> City:
        home = Home(tmp_path / f"city{next(numbers)}")
        config = NodeConfig(
            city=CityConfig(name=name, country=country),
            network="citymesh",
            relays=[nats_server.client_url],
            listen=f"127.0.0.1:{free_port()}",
        )
        init_home(home, config)
        city = City(home=home, relays=[nats_server.client_url])
        cities.append(city)
        if start:
            await city.start()
        return city

    yield make
    for city in cities:
        for client in city.clients:
            await client.close()
    # Independent nodes: stop them together (each stop waits for its relay links).
    await asyncio.gather(*(city.stop() for city in cities))


async def wait_for(
    predicate: Callable[[], Awaitable[object] | object],
    timeout: float = 20.0,
    interval: float = 0.05,
) -> None:
    """Poll until true (convergence across nodes, the UI catching up); fail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def screen_text(app: CitymeshApp) -> str:
    """Everything on the terminal right now, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_text(pilot: Pilot[None], *texts: str, timeout: float = 20.0) -> None:
    """Wait until every text is on screen."""
    app = pilot.app
    assert isinstance(app, CitymeshApp)

    async def shown() -> bool:
        await pilot.pause()
        content = screen_text(app)
        return all(t in content for t in texts)

    try:
        await wait_for(shown, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"not on screen: {[t for t in texts if t not in screen_text(app)]}\n" + screen_text(app)
        ) from None


def tui(city: City) -> CitymeshApp:
    """The app the CLI would start for this city's home (retrying fast, for the tests)."""
    return create_app(city.location, retry=(0.05, 0.3), batch_delay=0.1)

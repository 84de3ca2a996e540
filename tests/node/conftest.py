"""Node fixtures: homes made with the real `init`, nodes started in-process against real relays."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from citymesh.node.app import create_app
from citymesh.node.config import CityConfig, Home, NodeConfig
from citymesh.node.daemon import Node
from citymesh.node.keys import NODE
from citymesh.node.natsserver import NatsServer
from citymesh.node.setup import init_home
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import Contact, PracticeBody

MakeHome = Callable[..., Home]
StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
def make_home(tmp_path: Path) -> MakeHome:
    """``make_home("Mechelen", "BEL", relays=[url], network="citymesh")`` runs init in a new dir."""
    numbers = itertools.count(1)

    def make(
        name: str = "Mechelen",
        country: str = "BEL",
        *,
        relays: list[str] | None = None,
        network: str = "citymesh",
        listen: str = "127.0.0.1:0",
    ) -> Home:
        home = Home(tmp_path / f"home{next(numbers)}-{name.lower()}")
        config = NodeConfig(
            city=CityConfig(name=name, country=country),
            network=network,
            relays=relays or [],
            listen=listen,
        )
        init_home(home, config)
        return home

    return make


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """``await start_node(home)`` starts a Node (stopped at teardown unless stopped already)."""
    nodes: list[Node] = []

    async def start(home: Home, *, relays: list[str] | None = None) -> Node:
        node = Node(home, home.load_config(), relays=relays)
        await node.start()
        nodes.append(node)
        return node

    yield start
    for node in reversed(nodes):
        if node.writer.store is not None:
            await node.stop()


def practice(n: int = 0, *, sector: str = "HOUSING", title: str | None = None) -> PracticeBody:
    """A small valid practice body."""
    return PracticeBody(
        title={"en": title or f"Practice {n}"},
        summary={"en": f"Summary of practice {n}"},
        status="active",
        sectors=[sector],  # type: ignore[list-item]
        contact=Contact(role_mailbox="desk@city.example.org"),
    )


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Poll an async predicate until true (for convergence across processes); fail on timeout."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@dataclass
class City:
    client: TestClient[web.Request, web.Application]
    token: str

    @property
    def identity(self) -> str:
        return identity_text(self.client.server.app[NODE].identity)  # type: ignore[union-attr]

    async def call(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.client.request(method, path, headers=headers, json=json) as resp:
            return resp.status, await resp.json()


MakeCity = Callable[[str, str], Awaitable[City]]


@pytest.fixture
async def make_city(nats_server: NatsServer, make_home: MakeHome) -> AsyncIterator[MakeCity]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(name: str, country: str) -> City:
        home = make_home(name, country, relays=[nats_server.client_url])
        client = TestClient(TestServer(create_app(home, home.load_config())))
        await client.start_server()
        clients.append(client)
        return City(client, home.load_token())

    yield make
    for client in reversed(clients):
        await client.close()

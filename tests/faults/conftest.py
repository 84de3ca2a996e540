"""Fault suite fixtures: relays (nats-server processes), TCP proxies, nodes in-process and in
subprocesses, all on random 127.0.0.1 ports; everything started here is stopped at teardown.

Run alone with ``pytest tests/faults`` (or ``-m faults``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from citymesh.node.config import Home
from citymesh.node.daemon import Node
from citymesh.node.natsserver import NatsServer

from ..conftest import NatsServerFactory
from .cluster import Local, NodeProc, make_home
from .proxy import Proxy

MakeHome = Callable[..., Home]
MakeProxy = Callable[[str], Proxy]
StartLocal = Callable[..., Awaitable[Local]]
MakeProc = Callable[..., NodeProc]
MemoryRelays = Callable[[], NatsServer]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: fault-injection suite on real processes over loopback (pytest tests/faults)",
    )


@pytest.fixture
def homes(tmp_path: Path) -> MakeHome:
    """``homes("Mechelen", "BEL")``: a node home made with the real ``init``."""
    numbers = itertools.count(1)

    def make(name: str, country: str = "BEL") -> Home:
        return make_home(tmp_path, f"{name}{next(numbers)}", country)

    return make


@pytest.fixture
def memory_relays(nats_server_factory: NatsServerFactory) -> Iterator[MemoryRelays]:
    """``memory_relays()``: a relay whose store is on tmpfs (/dev/shm), for tests that load tens
    of thousands of records and whose fault is not the relay's disk: with ``sync_interval:
    always`` a relay on a small VM's disk stores only a few hundred messages a second. A process
    killed with -9 loses nothing on tmpfs either (only a power loss would)."""
    shm = Path("/dev/shm")
    made: list[tuple[NatsServer, Path | None]] = []

    def make() -> NatsServer:
        if shm.is_dir() and os.access(shm, os.W_OK):
            store = Path(tempfile.mkdtemp(prefix="citymesh-faults-", dir=shm))
            made.append((nats_server_factory(store_dir=store), store))
        else:
            made.append((nats_server_factory(), None))
        return made[-1][0]

    yield make
    for server, store in made:  # before the factory's own teardown: stop, then free the memory
        server.stop()
        if store is not None:
            shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def proxies() -> Iterator[MakeProxy]:
    """``proxies(relay_url)``: a started TCP proxy in front of the relay."""
    made: list[Proxy] = []

    def make(url: str) -> Proxy:
        proxy = Proxy.to_url(url)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


@pytest.fixture
async def local_nodes() -> AsyncIterator[StartLocal]:
    """``await local_nodes(name, home, [relay URLs])``: a Node in this process."""
    started: list[Local] = []

    async def start(name: str, home: Home, relays: list[str]) -> Local:
        node = Node(home, home.load_config(), relays=relays)
        await node.start()
        local = Local(name, node)
        started.append(local)
        return local

    yield start
    for local in reversed(started):
        if local.node.writer.store is not None:
            await local.node.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[MakeProc]:
    """``procs(name, home, [relay URLs], clock_offset_s=0)``: a started ``citymesh node run``."""
    started: list[NodeProc] = []

    def make(name: str, home: Home, relays: list[str], *, clock_offset_s: float = 0.0) -> NodeProc:
        proc = NodeProc(name, home, relays, tmp_path / f"{name}.log", clock_offset_s)
        proc.start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
